"""dev/services.py with real servers: embedded PostgreSQL and Redis are started, shared, adopted
and stopped by real runner processes. The probes point at a closed port (DEV_SERVICES_PROBE_*),
so the embedded path is taken even where 127.0.0.1:5432 and :6379 answer.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "127.0.0.1:1"

# CMD for the runner: uses both services, reports what it saw, then sleeps and exits as told.
CHECK = """
import json, os, pathlib, sys, time
import psutil, psycopg, redis
var = pathlib.Path(os.environ["DEV_SERVICES_VAR"])
with psycopg.connect(os.environ["DATABASE_URL"]) as connection:
    assert connection.execute("SELECT 1").fetchone() == (1,)
    database = connection.execute("SELECT current_database()").fetchone()[0]
client = redis.Redis.from_url(os.environ["REDIS_URL"])
assert client.ping()
client.close()
servers, children = [], []
for pid_file in (var / "postgres" / "postmaster.pid", var / "redis" / "redis.pid"):
    if pid_file.exists():
        server = psutil.Process(int(pid_file.read_text().split()[0]))
        servers.append(server.pid)
        children += [child.pid for child in server.children(recursive=True)]
report = {name: os.environ[name] for name in ("DATABASE_URL", "REDIS_URL")}
report.update(pid=os.getpid(), database=database, servers=servers, children=children)
print(json.dumps(report), flush=True)
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[1]))
"""


def _environment(var: Path, **settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "REDIS_URL"} and not name.startswith("OIDC_")
    }
    env.update(DEV_SERVICES_VAR=str(var), DEV_SERVICES_PROBE_PG=CLOSED)
    env["DEV_SERVICES_PROBE_REDIS"] = CLOSED
    return env | settings


def _services(*args: str) -> list[str]:
    return [sys.executable, "-m", "dev.services", *args]


def _check(exit_code: int = 0, sleep: float = 0) -> list[str]:
    return [sys.executable, "-c", CHECK, str(exit_code), str(sleep)]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def _report(output: str) -> dict[str, Any]:
    return json.loads(output.splitlines()[-1])


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _first_report(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    assert ready, "the runner's command did not report within 30 s"
    return json.loads(process.stdout.readline())


def _running(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/")[0]


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data directory for the module, so initdb runs once; its servers stopped at the end."""
    path = tmp_path_factory.mktemp("services") / "var"
    yield path
    _run(_services("stop"), _environment(path))


@pytest.fixture
def runners() -> Iterator[list[subprocess.Popen[str]]]:
    """Runner processes started in the background, killed if a test leaves them behind."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_embedded_servers_serve_the_command_and_stop_after_it(var: Path) -> None:
    result = _run(_services("run", "--", *_check(exit_code=7)), _environment(var))

    assert result.returncode == 7, result.stderr
    assert "postgres: embedded at" in result.stderr
    assert "redis: embedded at" in result.stderr
    report = _report(result.stdout)
    assert report["database"] == "postgres"
    assert report["DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:")
    assert len(report["servers"]) == 2
    assert report["children"]
    assert _running(report["servers"] + report["children"]) == []
    assert not (var / "postgres" / "postmaster.pid").exists()


def test_database_option_creates_the_database_once(var: Path) -> None:
    command = _services("run", "--database", "orders_dev", "--", *_check())

    first, second = _run(command, _environment(var)), _run(command, _environment(var))

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert "created database orders_dev" in first.stderr
    assert "created database" not in second.stderr
    assert _report(second.stdout)["database"] == "orders_dev"


def test_runs_share_servers_and_sigterm_stops_everything(
    var: Path, tmp_path: Path, runners: list[subprocess.Popen[str]]
) -> None:
    first = _start(_services("run", "--", *_check(sleep=60)), _environment(var))
    runners.append(first)
    owner = _first_report(first)

    shared = _run(_services("run", "--", *_check()), _environment(var))
    probing = _run(
        _services("run", "--", *_check()),
        _environment(
            tmp_path / "other",
            DEV_SERVICES_PROBE_PG=f"127.0.0.1:{_port(owner['DATABASE_URL'])}",
            DEV_SERVICES_PROBE_REDIS=f"127.0.0.1:{_port(owner['REDIS_URL'])}",
        ),
    )
    exported = _run(_services("env"), _environment(var))
    refused = _run(_services("stop"), _environment(var))

    assert shared.returncode == 0, shared.stderr
    assert shared.stderr.count("shared with another run") == 2
    assert _report(shared.stdout)["DATABASE_URL"] == owner["DATABASE_URL"]
    assert probing.returncode == 0, probing.stderr
    assert probing.stderr.count("(already running") == 2
    assert _report(probing.stdout)["REDIS_URL"] == owner["REDIS_URL"]
    assert not (tmp_path / "other" / "postgres").exists()
    assert f"export DATABASE_URL={owner['DATABASE_URL']}" in exported.stdout
    assert refused.returncode == 1
    assert _running(owner["servers"]) == owner["servers"]

    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)

    assert first.returncode == 128 + signal.SIGTERM
    assert _running([owner["pid"], *owner["servers"], *owner["children"]]) == []


def test_servers_left_by_a_killed_run_are_adopted_and_stopped(
    var: Path, runners: list[subprocess.Popen[str]]
) -> None:
    killed = _start(_services("run", "--", *_check(sleep=60)), _environment(var))
    runners.append(killed)
    orphaned = _first_report(killed)
    killed.kill()
    os.kill(orphaned["pid"], signal.SIGKILL)  # it would hold the pipes open
    killed.communicate(timeout=10)
    assert _running(orphaned["servers"]) == orphaned["servers"]

    result = _run(_services("run", "--", *_check()), _environment(var))

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("left by a killed run") == 2
    assert _running(orphaned["servers"] + orphaned["children"]) == []


def test_stale_pid_files_are_ignored_and_sigint_is_forwarded(
    var: Path, runners: list[subprocess.Popen[str]]
) -> None:
    assert _run(_services("stop"), _environment(var)).returncode == 0
    # pid files naming a live process that is no server, as after a crash and pid reuse
    for name in ("postgres", "redis"):
        (var / name).mkdir(parents=True, exist_ok=True)
    (var / "postgres" / "postmaster.pid").write_text(f"{os.getpid()}\n{var}\n0\n5432\n\n\n\n")
    (var / "redis" / "redis.pid").write_text(f"{os.getpid()}\n")
    interrupted = _start(_services("run", "--", *_check(sleep=60)), _environment(var))
    runners.append(interrupted)
    report = _first_report(interrupted)

    interrupted.send_signal(signal.SIGINT)
    _, errors = interrupted.communicate(timeout=60)

    assert "left by a killed run" not in errors
    assert interrupted.returncode == 128 + signal.SIGINT, errors
    assert _running([report["pid"], *report["servers"], *report["children"]]) == []


def test_sighup_stops_a_command_that_ignores_sigterm_with_its_descendants(var: Path) -> None:
    stubborn = (
        "import signal, subprocess, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sleeper = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "print(sleeper.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    # the runner with a short grace period before it kills CMD
    runner = "import sys, dev.services as s; s.STOP_GRACE = 1; sys.exit(s.main(sys.argv[1:]))"
    args = [sys.executable, "-c", runner, "run", "--", sys.executable, "-c", stubborn]
    with _start(args, _environment(var)) as process:
        assert process.stdout is not None
        assert select.select([process.stdout], [], [], 30)[0]
        grandchild = int(process.stdout.readline())
        process.send_signal(signal.SIGHUP)
        _, errors = process.communicate(timeout=30)

    assert process.returncode == 128 + signal.SIGKILL, errors
    assert _running([grandchild]) == []
    assert not (var / "postgres" / "postmaster.pid").exists()


def test_urls_from_the_environment_are_used_as_given(tmp_path: Path) -> None:
    env = _environment(
        tmp_path / "var",
        DATABASE_URL="postgres://app:hunter2@db.invalid:5432/orders",
        REDIS_URL="redis://:hunter2@cache.invalid:6379/0",
    )
    show = "import os; print(os.environ['DATABASE_URL'], os.environ['REDIS_URL'])"

    result = _run(_services("run", "--", sys.executable, "-c", show), env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [env["DATABASE_URL"], env["REDIS_URL"]]
    assert "postgres: postgres://db.invalid:5432/orders (from DATABASE_URL)" in result.stderr
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "var").exists()


def test_a_missing_command_exits_127_and_stops_the_servers(var: Path) -> None:
    result = _run(_services("run", "--", str(var / "no-such-command")), _environment(var))

    assert result.returncode == 127
    assert "cannot run" in result.stderr
    assert not (var / "postgres" / "postmaster.pid").exists()
    assert not (var / "redis" / "redis.pid").exists()
