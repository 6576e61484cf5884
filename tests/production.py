"""The service's processes started as the Procfile starts them, in production mode.

`production_env()` is a complete production environment over this run's database, Redis and
the development identity provider, with fresh secrets; `refusal()` runs a Procfile process that
must stop at start and returns what it said; `web_server()` serves the Procfile's `web` (gunicorn
with gunicorn.conf.py) on an ephemeral port for the tests to call over HTTP.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from common.settings import Settings
from tests.conftest import CLIENT_SECRET, QUEUE, REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
# A process that should refuse at once, or serve, is given this long before the test gives up
# on it (a safeguard against hanging, not a measure of speed).
PATIENCE_SECONDS = 90
# What a process needs from the test's own environment; nothing else (no APP_ENV, no AT_...).
PASSED_THROUGH = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def procfile() -> dict[str, str]:
    """The Procfile's processes by name."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def bare_env(**changes: str | None) -> dict[str, str]:
    """An environment with no setting of the service at all, but `changes` (None removes one);
    a worker started in it would use this run's queue, a Flower an ephemeral port."""
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "CELERY_QUEUE": QUEUE,
            "FLOWER_ADDRESS": "127.0.0.1",
            "FLOWER_PORT": "0",
        }
    )
    env.update(changes)
    return {name: value for name, value in env.items() if value is not None}


def production_env(database_url: str, issuer: str, **changes: str | None) -> dict[str, str]:
    """A complete, valid production environment; `changes` override it (None removes one)."""
    return bare_env(
        **{
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_hex(32),
            "DATABASE_URL": database_url,
            "REDIS_URL": _spelled_apart(REDIS_URL),
            "OIDC_ISSUER": issuer,
            "OIDC_CLIENT_ID": "customer_api",
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "AT_USERNAME": "sandbox",
            "AT_API_KEY": secrets.token_hex(16),
            "AT_CALLBACK_SECRET": secrets.token_urlsafe(32),
            "FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(16)}",
            "LOG_LEVEL": "WARNING",
            **changes,
        }
    )


def _spelled_apart(redis_url: str) -> str:
    # Production refuses the development default URL (redis://127.0.0.1:6379/0) as if unset;
    # the same database without the "/0" is the same server, named on purpose.
    return redis_url.removesuffix("/0") if redis_url == Settings().redis_url else redis_url


@dataclass(frozen=True)
class Refusal:
    """How a process ended: its exit status and what it wrote (stdout and stderr together)."""

    status: int
    output: str


def assert_refused_readably(refused: Refusal, *expected: str) -> None:
    """The process stopped with a non-zero status, said each of `expected`, and printed no
    traceback."""
    assert refused.status != 0, refused.output
    for text in expected:
        assert text in refused.output
    assert "Traceback" not in refused.output


def refusal(process: str, env: dict[str, str]) -> Refusal:
    """Run the Procfile's `process` (web, worker, beat, flower, release) with `env` until it
    exits; one still running after the patience is killed and fails the test."""
    child = subprocess.Popen(
        ["sh", "-c", procfile()[process]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = child.communicate(timeout=PATIENCE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        output, _ = child.communicate()
        raise AssertionError(f"{process} kept running instead of refusing:\n{output}") from None
    return Refusal(child.returncode, output)


@dataclass
class WebServer:
    """A running `web` process: its base URL and, once stopped, everything it wrote."""

    url: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _listening_port(master: psutil.Process) -> int | None:
    # gunicorn.conf.py binds a socket per worker (reuse_port), so with port 0 the address is
    # the worker's; one worker here, so one port.
    for worker in master.children():
        for connection in worker.net_connections("inet"):
            if connection.status == psutil.CONN_LISTEN:
                return connection.laddr.port
    return None


@contextmanager
def web_server(env: dict[str, str], metrics_dir: Path) -> Iterator[WebServer]:
    """The Procfile's `web` process with `env`, one worker on an ephemeral port of 127.0.0.1,
    ready (`/healthz` answers) when entered and stopped on exit."""
    env = {
        **env,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "4",
        # Ours alone: gunicorn.conf.py would otherwise empty a directory shared on this host.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    child = subprocess.Popen(
        ["sh", "-c", f"exec {procfile()['web']}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = WebServer()
    reader = threading.Thread(target=lambda: server.lines.extend(child.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + PATIENCE_SECONDS
        while not server.url:
            assert child.poll() is None, f"web exited with {child.returncode}:\n{server.output}"
            assert time.monotonic() < deadline, f"web did not listen:\n{server.output}"
            port = _listening_port(psutil.Process(child.pid))
            if port is not None:
                server.url = f"http://127.0.0.1:{port}"
            else:
                time.sleep(0.1)
        while True:
            try:
                if requests.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert child.poll() is None, f"web exited with {child.returncode}:\n{server.output}"
            assert time.monotonic() < deadline, f"web did not answer:\n{server.output}"
            time.sleep(0.1)
        yield server
    finally:
        child.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
        try:
            child.wait(timeout=PATIENCE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        reader.join(timeout=10)
        child.stdout.close()
