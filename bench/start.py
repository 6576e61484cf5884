"""What a benchmark run starts, where each part listens, and how the harness talks to them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import redis

from bench import data
from bench.api import CLIENT_ID, ME, REALM, USERS, body
from bench.procs import (
    BenchError,
    Managed,
    Processes,
    free_port,
    http_status,
    log_contains,
    request_json,
    wait_until,
)
from bench.settings import ROOT, Settings

# Unless REDIS_URL names a database of its own (other than 0), the bench uses this one.
REDIS_DB = 9
GATEWAY_THREADS = 1024  # more than the worker's sends in flight: 32 tasks of 20 side by side


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    started = time.monotonic()
    say(f"{what} ...")
    yield
    say(f"{what}: done in {time.monotonic() - started:.1f} s")


def quietly(what: str, action: Callable[[], object]) -> None:
    """Run a clean-up action; a failure is reported, not raised (the others still run)."""
    try:
        action()
    except Exception as error:
        say(f"cleanup: {what} failed: {error}")


def procfile_command(process_type: str) -> str:
    """The command of one Procfile line, e.g. `web`."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process_type:
            return command.strip()
    raise BenchError(f"the Procfile has no {process_type!r} line")


def bench_redis_url(url: str) -> str:
    """`url` with the bench's database: the one it names if not 0 (on a server shared by
    several people, each names their own), else REDIS_DB. Nothing the bench leaves then mixes
    with a developer's database 0, which production refuses anyway."""
    parts = urlsplit(url)
    named = parts.path.strip("/")
    database = named if named.isdigit() and int(named) != 0 else str(REDIS_DB)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(redis_url: str) -> str:
    """The PostgreSQL database of the run, named after its Redis database (orders_bench_9):
    two people's runs on one server, each with a Redis database of their own, then do not drop
    each other's tables."""
    return f"orders_bench_{urlsplit(redis_url).path.strip('/')}"


class Services:
    """The processes of one run: PostgreSQL's database and Redis, dev.idp, the SMS gateway,
    the floors, the service's web and workers; stopped when `stack` closes."""

    def __init__(self, settings: Settings, stack: contextlib.ExitStack) -> None:
        self.settings = settings
        self.stack = stack
        self.tag = secrets.token_hex(4)
        self.work_dir = settings.log_dir
        self.workers: list[Managed] = []
        self.noop_workers: list[Managed] = []
        self.tokens: dict[str, str] = {}

    # -- set-up ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up except the Celery workers (`start_workers`)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for old in self.work_dir.iterdir():
            if old.is_file():
                old.unlink()
        self.procs = Processes(self.work_dir)
        self._databases()
        self._environments()
        self.stack.callback(quietly, "stop processes", self.procs.stop_all)
        self._start_idp()
        self._start_gateway()
        with step("migrations"):
            self._run(["flask", "--app", "web:create_app", "db", "upgrade"], self.prod_env)
        if "create" in self.settings.only:
            self._start_floors()
        self._start_web()
        self._sign_in()

    def _databases(self) -> None:
        # dev.services finds PostgreSQL and Redis as the tests do (or starts embedded ones,
        # stopped again when the stack closes).
        from dev import services

        with step("PostgreSQL and Redis"):
            server_url = services.resolve_postgres(self.stack, None)
            self.redis_url = bench_redis_url(services.resolve_redis(self.stack))
            database = database_name(self.redis_url)
            self.database_url = data.recreate_database(server_url, database)
            self.stack.callback(
                quietly, "drop database", lambda: data.drop_database(server_url, database)
            )
            say(f"fresh database {database}, Redis database {urlsplit(self.redis_url).path[1:]}")
        self.redis = redis.Redis.from_url(self.redis_url)
        self.sms_queue = f"bench-sms-{self.tag}"
        self.noop_queue = f"bench-noop-{self.tag}"
        self.floor_list = f"bench-floor-{self.tag}"
        self.stack_floor_list = f"bench-stack-floor-{self.tag}"
        self.stack.callback(quietly, "forget Redis keys", self._forget_redis_keys)

    def _forget_redis_keys(self) -> None:
        """Delete this run's queues, list and kombu bindings, and its unacked messages."""
        names = [self.sms_queue, self.noop_queue, self.floor_list, self.stack_floor_list]
        keys = list(self.redis.scan_iter(f"*{self.tag}*", count=1000))
        if keys:
            self.redis.delete(*keys)
        for tag, raw in self.redis.hgetall("unacked").items():
            with contextlib.suppress(ValueError, IndexError):
                if json.loads(raw)[2] in names:
                    self.redis.hdel("unacked", tag)
                    self.redis.zrem("unacked_index", tag)

    def _environments(self) -> None:
        base = {k: v for k, v in os.environ.items() if k not in ("APP_ENV", "FLASK_ENV")}
        base.pop("SENTRY_DSN", None)
        venv_bin = str(Path(sys.executable).parent)
        base["PATH"] = f"{venv_bin}:{base.get('PATH', '')}"
        base["PYTHONPATH"] = str(ROOT)
        self.dev_env = base
        self.idp_port, self.gateway_port = free_port(), free_port()
        self.web_port, self.floor_port = free_port(), free_port()
        self.stack_floor_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.idp_port}/realms/{REALM}"
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.client_secret = secrets.token_urlsafe(24)
        self.at_username, self.at_api_key = "bench", secrets.token_urlsafe(24)
        metrics_dir = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
        self.stack.callback(
            quietly, "remove metrics dir", lambda: subprocess.run(["rm", "-rf", metrics_dir])
        )
        self.prod_env = {
            **base,
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(30),  # 40 characters
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "OIDC_ISSUER": self.issuer,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": self.client_secret,
            "AT_USERNAME": self.at_username,
            "AT_API_KEY": self.at_api_key,
            "AT_API_URL": self.gateway_url,
            "AT_CALLBACK_SECRET": secrets.token_urlsafe(24),
            "FLOWER_BASIC_AUTH": f"bench:{secrets.token_urlsafe(16)}",
            "CELERY_QUEUE": self.sms_queue,
            # One user places every order of a run: a real caller's SMS limit would stop it.
            "SMS_RATE_LIMIT": "10000000 per minute",
            "RATE_LIMIT_PREFIX": f"bench-limits-{self.tag}",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "HOST": "127.0.0.1",
            "PORT": str(self.web_port),
        }

    def _run(self, args: list[str], env: dict[str, str]) -> None:
        completed = subprocess.run(
            args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
        )
        if completed.returncode != 0:
            raise BenchError(f"{shlex.join(args)} failed:\n{completed.stderr[-3000:]}")

    def _start_idp(self) -> None:
        self.user_password = secrets.token_urlsafe(12)
        users_file = self.work_dir / "users.json"
        users = [user.as_idp_user(self.user_password) for user in USERS.values()]
        users_file.write_text(json.dumps({"users": users}, indent=2))
        with step("identity provider (dev.idp)"):
            idp = self.procs.start(
                "idp",
                [
                    *(sys.executable, "-m", "dev.idp", "--host", "127.0.0.1"),
                    *("--port", str(self.idp_port), "--users", str(users_file)),
                    *("--client-id", CLIENT_ID, f"--client-secret={self.client_secret}"),
                    *("--access-token-lifespan", "7200"),
                ],
                self.dev_env,
                cwd=ROOT,
            )
            discovery = f"{self.issuer}/.well-known/openid-configuration"
            wait_until(lambda: http_status(discovery) == 200, 30, "dev.idp", idp)

    def _start_gateway(self) -> None:
        with step("SMS gateway (dev.sms_gateway)"):
            # Under gunicorn's threaded worker, one process (its messages and counters live in
            # memory): Africa's Talking keeps a connection open for the next message, while
            # werkzeug's server (`python -m dev.sms_gateway`) closes every connection, which
            # would charge the worker a TCP connect and the stand-in a new thread per SMS.
            factory = (
                f"dev.sms_gateway:FakeSmsGateway(username={self.at_username!r}, "
                f"api_key={self.at_api_key!r})"
            )
            self.gateway = gateway = self.procs.start(
                "sms-gateway",
                [
                    *(sys.executable, "-m", "gunicorn", "--config", "/dev/null", "--workers=1"),
                    *("--worker-class=gthread", f"--threads={GATEWAY_THREADS}"),
                    "--no-control-socket",
                    *("--keep-alive=75", f"--bind=127.0.0.1:{self.gateway_port}", factory),
                ],
                self.dev_env,
                cwd=ROOT,
            )
            stats = f"{self.gateway_url}/_admin/stats"
            wait_until(lambda: http_status(stats) == 200, 30, "dev.sms_gateway", gateway)

    def _start_floors(self) -> None:
        from bench.floor import CREATE_TABLE

        with data.connect(self.database_url) as connection:
            connection.execute(CREATE_TABLE)
        # Both floors write to the floor's table, each to a Redis list of its own.
        self._start_floor_app("floor", "bench.floor", self.floor_port, self.floor_list)
        self._start_floor_app(
            "stack-floor", "bench.stack_floor", self.stack_floor_port, self.stack_floor_list
        )

    def _start_floor_app(self, name: str, module: str, port: int, redis_list: str) -> None:
        """A floor app under `gunicorn -w 2`: gunicorn's defaults otherwise (its sync worker)."""
        with step(f"{name} ({module.replace('.', '/')}.py under gunicorn -w 2)"):
            env = {
                **self.dev_env,
                "FLOOR_DATABASE_URL": data.normalise_url(self.database_url),
                "FLOOR_REDIS_URL": self.redis_url,
                "FLOOR_REDIS_LIST": redis_list,
            }
            process = self.procs.start(
                name,
                # --config: without one gunicorn would read the service's ./gunicorn.conf.py;
                # an empty one leaves gunicorn's defaults.
                [
                    *("gunicorn", "--config", "/dev/null", "-w", "2", "--no-control-socket"),
                    *("--bind", f"127.0.0.1:{port}", f"{module}:app"),
                ],
                env,
                cwd=ROOT,
            )
            url = f"http://127.0.0.1:{port}/"
            wait_until(lambda: http_status(url) == 200, 30, name, process)

    def _start_service(self, name: str, command: str) -> Managed:
        """A Procfile command of the service, in production mode."""
        return self.procs.start(
            name, ["sh", "-c", f"exec {command}"], self.prod_env, cwd=ROOT, grace=25
        )

    def _start_web(self) -> None:
        command = procfile_command("web")
        with step(f"web: {command}"):
            self.web = self._start_service("web", command)
            url = f"http://127.0.0.1:{self.web_port}/readyz"
            wait_until(lambda: http_status(url) == 200, 60, "the service (web)", self.web)

    def _worker_command(self, extra: str) -> str:
        command = procfile_command("worker")
        if self.settings.worker_pool:
            command += f" --pool={shlex.quote(self.settings.worker_pool)}"
        if self.settings.worker_concurrency:
            # The environment too: the worker's database pool follows WORKER_CONCURRENCY.
            concurrency = self.settings.worker_concurrency
            command = f"WORKER_CONCURRENCY={concurrency} {command} --concurrency={concurrency}"
        return f"{command} {extra}"

    def start_workers(self) -> dict[str, Any]:
        """The SMS worker and the no-op worker, each `--worker-processes` times (named worker,
        worker-2, ...; the first is the one whose memory is measured); what they run as."""
        for index in range(1, max(1, self.settings.worker_processes) + 1):
            suffix = "" if index == 1 else f"-{index}"
            sms = self._worker_command(f"--hostname=bench-sms-{self.tag}{suffix}@%h")
            noop = self._worker_command(
                f"--include bench.noop_tasks --queues={self.noop_queue} "
                f"--hostname=bench-noop-{self.tag}{suffix}@%h"
            )
            with step(f"Celery workers: {sms}"):
                worker = self._start_service(f"worker{suffix}", sms)
                noop_worker = self._start_service(f"noop-worker{suffix}", noop)
                for process in (worker, noop_worker):
                    wait_until(
                        lambda p=process: log_contains(p, r"ready\."), 90, process.name, process
                    )
            self.workers.append(worker)
            self.noop_workers.append(noop_worker)
        self.worker, self.noop_worker = self.workers[0], self.noop_workers[0]
        banner = re.search(
            r"concurrency:\s*(\d+)\s*\((\w+)\)", self.worker.log_path.read_text(errors="replace")
        )
        return {
            "command": sms,
            "processes": len(self.workers),
            "concurrency": int(banner[1]) if banner else None,
            "pool": banner[2] if banner else None,
        }

    def _sign_in(self) -> None:
        """A real RS256 access token per bench user from dev.idp's token endpoint; each user's
        first request provisions its customer, as in production."""
        with step("tokens and customers"):
            form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
            for role, user in USERS.items():
                form = {
                    "grant_type": "password",
                    "client_id": CLIENT_ID,
                    "client_secret": self.client_secret,
                    "username": user.username,
                    "password": self.user_password,
                    "scope": "openid",
                }
                status, answer = self.post(
                    self.idp_port,
                    f"/realms/{REALM}/protocol/openid-connect/token",
                    urlencode(form),
                    form_headers,
                )
                if status != 200:
                    raise BenchError(f"dev.idp refused {user.username}: {answer}")
                self.tokens[role] = answer["access_token"]
                me = self.graphql(role, ME)["me"]
                if me is None or me["id"] != str(user.customer_id):
                    raise BenchError(f"customer of {user.username} not provisioned: {me}")

    # -- talking to them ---------------------------------------------------------------------

    def post(self, port: int, path: str, text: str, headers: dict[str, str]) -> tuple[int, Any]:
        return request_json(port, "POST", path, text, headers)

    @property
    def graphql_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/graphql"

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def graphql(self, role: str, query: str, variables: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json", **self.auth(role)}
        status, answer = self.post(self.web_port, "/graphql", body(query, variables or {}), headers)
        if status != 200 or not isinstance(answer, dict) or answer.get("errors"):
            raise BenchError(f"GraphQL as {role} failed (HTTP {status}): {answer}")
        return answer["data"]

    def gateway_admin(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """POST `payload` to the gateway's admin API, or GET without one."""
        status, answer = request_json(
            self.gateway_port,
            "GET" if payload is None else "POST",
            f"/_admin/{path}",
            json.dumps(payload) if payload is not None else None,
            {"Content-Type": "application/json"},
        )
        if status != 200:
            raise BenchError(f"gateway admin {path}: HTTP {status} {answer}")
        return answer

    def set_gateway_latency(self, seconds: float) -> None:
        self.gateway_admin("latency", {"seconds": seconds})

    def check_alive(self, processes: list[Managed] | None = None) -> None:
        """Raise if any of `processes` (default: every process started) died."""
        for process in self.procs.started if processes is None else processes:
            process.check()
