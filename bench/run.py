"""The benchmark: the service beside its floor, in one run on this machine.

    python -m bench.run [--smoke] [--duration 10] [--profile]

It brings up PostgreSQL and Redis as the tests do (dev.services), a fresh database
`orders_bench` with the migrations applied, the development identity provider, the local SMS
gateway, the service with its production config under gunicorn (the Procfile's `web` line), its
Celery worker (the Procfile's `worker` line), a second worker running a no-op task, and the
floor (bench/floor.py under `gunicorn -w 2`) and the stack floor (bench/stack_floor.py: the
floor's work through Flask, Ariadne and Flask-SQLAlchemy, served the same way). Load comes from
wrk (or bench/load.py) in a separate process. Then, side by side:

  a. createOrder (RS256 token, fresh idempotency key per call) vs the floor and the stack
     floor: req/s, p50, p99;
  b. confirmOrder p99 with the gateway answering in 0 ms and in 200 ms;
  c. myOrders(first: 20) p50 for a customer with 10,000 orders and one with 1,000,000;
  d. SMS drain (QUEUED notifications, gateway at 100 ms) vs a Celery no-op drain;
  e. peak resident memory of a web worker and of the Celery worker;
  f. the hostile documents of bench/documents.py, sent without a token, or as an admin for
     those that make the database work (first, while the machine is otherwise idle): the
     median answer of the slowest.

It prints a table, writes bench/results.json and stops everything it started, on Ctrl-C too.
Exit status: 0 when every target is met (or, with --smoke, whenever the harness worked), 1 when
a target is missed (full mode only), 2 when a measurement could not be made or trusted, 130 when
interrupted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import redis

from bench import data, documents
from bench.load import PLACEHOLDER, LoadResult, LoadSpec, available_generator, run_load
from bench.procs import (
    BenchError,
    CpuMeter,
    Managed,
    Processes,
    children,
    cpu_line,
    free_port,
    http_status,
    log_contains,
    memory_kb,
    wait_until,
)
from bench.report import Row, check, format_table, machine_info, ratio, write_results

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "orders_bench"
REDIS_DB = 9
REALM = "donfiles"
CLIENT_ID = "customer_api"
GATEWAY_THREADS = 1024  # more than the worker's sends in flight: 32 tasks of 20 side by side
NOOP_TASK = "bench.noop"  # bench.noop_tasks.NOOP_TASK; not imported: it loads the service

CREATE_ORDER = (
    "mutation CreateOrder($input: CreateOrderInput!) { createOrder(input: $input) "
    "{ success replayed order { id status totalPrice } } }"
)
CONFIRM_ORDER = (
    "mutation ConfirmOrder($id: ID!) { confirmOrder(orderId: $id) { success order { id status } } }"
)
MY_ORDERS = (
    "query MyOrders($first: Int) { myOrders(first: $first) { id status totalPrice createdAt } }"
)
ME = "query Me { me { id phone } }"
SUCCESS = '"success":true'
PHASES = ("documents", "create", "confirm", "my-orders", "drain")


def check_alive(processes: list[Managed]) -> None:
    """Raise if any of these processes died."""
    for process in processes:
        process.check()


def _body(query: str, variables: dict[str, Any]) -> str:
    return json.dumps({"query": query, "variables": variables}, separators=(",", ":"))


CREATE_TEMPLATE = _body(
    CREATE_ORDER,
    {"input": {"price": "1200.00", "orderDetails": "Deliver ASAP", "idempotencyKey": PLACEHOLDER}},
)
CONFIRM_TEMPLATE = _body(CONFIRM_ORDER, {"id": PLACEHOLDER})
MY_ORDERS_BODY = _body(MY_ORDERS, {"first": 20})


@dataclass(frozen=True)
class BenchUser:
    """A user of the bench realm; its customer record is created by its first request."""

    role: str
    phone: str
    realm_role: str = "customer"

    @property
    def username(self) -> str:
        return f"bench-{self.role}"

    @property
    def sub(self) -> str:
        # The service uses a UUID subject as the customer's id.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"order-service-bench/{self.role}"))

    @property
    def customer_id(self) -> uuid.UUID:
        return uuid.UUID(self.sub)

    def as_idp_user(self, password: str) -> dict[str, Any]:
        return {
            "username": self.username,
            "password": password,
            "sub": self.sub,
            "name": f"Bench {self.role.title()}",
            "email": f"{self.username}@example.com",
            "phone_number": self.phone,
            "realm_roles": [self.realm_role],
            "client_roles": {CLIENT_ID: [self.realm_role]},
        }


USERS = {
    user.role: user
    for user in (
        BenchUser("create", "+254711000001"),
        BenchUser("confirm", "+254711000002"),
        BenchUser("small", "+254711000003"),
        BenchUser("large", "+254711000004"),
        BenchUser("drain", "+254711000005"),
        # Sends the hostile documents that need rows to work on (see bench/documents.py).
        BenchUser("admin", "+254711000006", realm_role="admin"),
    )
}


@dataclass(frozen=True)
class Settings:
    """How big and how long; `--smoke` makes everything tiny."""

    smoke: bool
    duration: float
    warmup: float
    connections: int
    latency_connections: int
    loadgen: str
    small_orders: int
    large_orders: int
    drain_count: int
    worker_pool: str | None
    worker_concurrency: int | None
    worker_processes: int
    profile: bool
    only: tuple[str, ...]
    results_path: Path
    log_dir: Path

    @property
    def confirm_orders(self) -> tuple[int, int]:
        """Orders prepared per confirm warm-up and per measurement: more than can be used."""
        return max(300, int(1500 * self.warmup)), max(1000, int(1500 * self.duration))


def parse_settings(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long run, tiny data")
    parser.add_argument("--duration", type=float, help="seconds per measurement (10; smoke 1.5)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each (2; 0.5)")
    parser.add_argument("--connections", type=int, default=16, help="for throughput (16)")
    parser.add_argument("--latency-connections", type=int, default=4, help="for latency (4)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--small-orders", type=int, help="myOrders small customer (10,000)")
    parser.add_argument("--large-orders", type=int, help="myOrders large customer (1,000,000)")
    parser.add_argument("--drain", type=int, help="SMS and no-op tasks to drain (5,000)")
    parser.add_argument("--worker-pool", help="override the Procfile worker's --pool")
    parser.add_argument("--worker-concurrency", type=int, help="override its --concurrency")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="run the Procfile's worker (and the no-op worker) this many times, scaled out (1)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the web workers under createOrder load"
    )
    parser.add_argument(
        "--only",
        type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        default=PHASES,
        metavar="PHASES",
        help=f"comma-separated phases to run, of {','.join(PHASES)} (all); memory always",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "var" / "bench")
    args = parser.parse_args(argv)
    if unknown := set(args.only) - set(PHASES):
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; of {', '.join(PHASES)}")
    smoke = args.smoke
    return Settings(
        smoke=smoke,
        duration=args.duration or (1.5 if smoke else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if smoke else 2.0),
        connections=args.connections,
        latency_connections=args.latency_connections,
        loadgen=available_generator(args.loadgen),
        small_orders=args.small_orders or (100 if smoke else 10_000),
        large_orders=args.large_orders or (1_000 if smoke else 1_000_000),
        drain_count=args.drain or (200 if smoke else 5_000),
        worker_pool=args.worker_pool,
        worker_concurrency=args.worker_concurrency,
        worker_processes=args.worker_processes,
        profile=args.profile,
        only=args.only,
        results_path=args.results,
        log_dir=args.log_dir,
    )


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    started = time.monotonic()
    say(f"{what} ...")
    yield
    say(f"{what}: done in {time.monotonic() - started:.1f} s")


def procfile_command(process_type: str) -> str:
    """The command of one Procfile line, e.g. `web`."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process_type:
            return command.strip()
    raise BenchError(f"the Procfile has no {process_type!r} line")


@dataclass
class Bench:
    """One benchmark run: the services it started and the figures it measured."""

    settings: Settings
    stack: contextlib.ExitStack
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    measurements: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # a figure cannot be trusted
    notes: list[str] = field(default_factory=list)  # worth knowing, not fatal

    # -- set-up ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up except the Celery workers (see `phase_create`)."""
        log_dir = self.settings.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        for old in log_dir.iterdir():
            if old.is_file():
                old.unlink()
        self.work_dir = log_dir
        self.procs = Processes(log_dir)
        self._services()
        self._environments()
        self.stack.callback(self._quietly, "stop processes", self.procs.stop_all)
        self._start_idp()
        self._start_gateway()
        with step("migrations"):
            self._run(["flask", "--app", "web:create_app", "db", "upgrade"], self.prod_env)
        if "create" in self.settings.only:
            self._start_floor()
        self._start_web()
        self._sign_in()

    @staticmethod
    def _quietly(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as error:
            say(f"cleanup: {what} failed: {error}")

    def _services(self) -> None:
        # dev.services finds PostgreSQL and Redis as the tests do (or starts embedded ones,
        # stopped again when the stack closes).
        from dev import services

        with step("PostgreSQL and Redis"):
            server_url = services.resolve_postgres(self.stack, None)
            # A Redis database of the bench's own: nothing it leaves mixes with a developer's
            # (and production refuses the development default, redis://127.0.0.1:6379/0).
            parts = urlsplit(services.resolve_redis(self.stack))
            self.redis_url = urlunsplit(parts._replace(path=f"/{REDIS_DB}"))
            self.database_url = data.recreate_database(server_url, DATABASE)
            self.stack.callback(
                self._quietly, "drop database", lambda: data.drop_database(server_url, DATABASE)
            )
            say(f"fresh database {DATABASE}")
        self.redis = redis.Redis.from_url(self.redis_url)
        self.sms_queue = f"bench-sms-{self.tag}"
        self.noop_queue = f"bench-noop-{self.tag}"
        self.floor_list = f"bench-floor-{self.tag}"
        self.stack_floor_list = f"bench-stack-floor-{self.tag}"
        self.stack.callback(self._quietly, "forget Redis keys", self._forget_redis_keys)

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
            self._quietly, "remove metrics dir", lambda: subprocess.run(["rm", "-rf", metrics_dir])
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

    def _start_floor(self) -> None:
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

    def _start_workers(self) -> None:
        """The SMS worker and the no-op worker, each `--worker-processes` times (named worker,
        worker-2, ...; the first is the one whose memory is measured)."""
        self.workers: list[Managed] = []
        self.noop_workers: list[Managed] = []
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
        self.measurements["worker"] = {
            "command": sms,
            "processes": len(self.workers),
            "concurrency": int(banner[1]) if banner else None,
            "pool": banner[2] if banner else None,
        }

    # -- talking to the services -------------------------------------------------------------

    def _request(
        self, port: int, method: str, path: str, body: str | None, headers: dict[str, str]
    ) -> tuple[int, Any]:
        """One request to a local service; its status and JSON answer (None if not JSON)."""
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request(method, path, body.encode() if body else None, headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, None

    def _post(self, port: int, path: str, body: str, headers: dict[str, str]) -> tuple[int, Any]:
        return self._request(port, "POST", path, body, headers)

    def _sign_in(self) -> None:
        """A real RS256 access token per bench user from dev.idp's token endpoint; each user's
        first request provisions its customer, as in production."""
        with step("tokens and customers"):
            self.tokens: dict[str, str] = {}
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
                status, answer = self._post(
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

    def graphql(self, role: str, query: str, variables: dict[str, Any] | None = None) -> Any:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.tokens[role]}",
        }
        status, answer = self._post(
            self.web_port, "/graphql", _body(query, variables or {}), headers
        )
        if status != 200 or not isinstance(answer, dict) or answer.get("errors"):
            raise BenchError(f"GraphQL as {role} failed (HTTP {status}): {answer}")
        return answer["data"]

    def _gateway_admin(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """POST `payload` to the gateway's admin API, or GET without one."""
        status, answer = self._request(
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
        self._gateway_admin("latency", {"seconds": seconds})

    # -- load --------------------------------------------------------------------------------

    def _spec(self, url: str, template: str, marker: str, **kwargs: Any) -> LoadSpec:
        return LoadSpec(
            url=url,
            template=template,
            marker=marker,
            connections=kwargs.pop("connections", self.settings.connections),
            duration=kwargs.pop("duration", self.settings.duration),
            **kwargs,
        )

    def load(self, name: str, spec: LoadSpec, *, warm: LoadSpec | None = None) -> LoadResult:
        """Warm up (unmeasured), then measure; a measurement with errors is noted."""
        for process in self.procs.started:
            process.check()
        if warm is not None and self.settings.warmup > 0:
            run_load(warm, self.settings.loadgen, self.work_dir, f"{name}-warmup")
        meter, counters = self.cpu_meter(), data.db_counters(self.database_url)
        result = run_load(spec, self.settings.loadgen, self.work_dir, name)
        self.record_cpu(name, meter, result.requests)
        self.record_db(name, counters, result.requests)
        self.problems += result.problems(name)
        say(
            f"{name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms ({result.requests} requests, {result.failures} failed)"
        )
        return result

    def cpu_meter(self) -> CpuMeter:
        """Start measuring who uses the CPU: our processes, PostgreSQL, Redis, the rest."""
        trees = {
            process.name: process.pid
            for process in self.procs.started
            if process.name in ("web", "floor", "stack-floor", "sms-gateway")
            or process.name.startswith(("worker", "noop-worker"))
        }
        return CpuMeter(trees, split=("web", "floor", "stack-floor"))

    def record_cpu(self, name: str, meter: CpuMeter, operations: int) -> None:
        usage = meter.stop()
        self.measurements.setdefault("cpu_percent", {})[name] = usage
        say(f"{name}: {cpu_line(usage)}")
        # CPU time per request or task: steadier than rates on a machine whose speed drifts.
        per = {
            key: round(percent / 100 * meter.seconds / max(1, operations) * 1000, 3)
            for key, percent in usage.items()
            if "/" not in key and percent >= 1
        }
        self.measurements.setdefault("cpu_ms_per_operation", {})[name] = per
        say(f"{name}: CPU ms per operation: " + ", ".join(f"{k} {v}" for k, v in per.items()))
        # Each gunicorn worker gets the connections the kernel hashes to its socket: with few
        # long-lived client connections one worker may get nearly all of them, and the run its
        # CPU only.
        workers = [value for key, value in usage.items() if key.startswith("web/")]
        if len(workers) > 1 and sum(workers) > 50 and min(workers) < 0.25 * max(workers):
            self.notes.append(
                f"{name}: load unbalanced across gunicorn workers "
                f"({', '.join(f'{value:.0f}%' for value in workers)} CPU): the client's "
                "keep-alive connections went mostly to one worker"
            )

    def record_db(self, name: str, before: dict[str, int], operations: int) -> None:
        """PostgreSQL's counters over a measurement, in total and per request or task:
        commits, sessions opened (connection churn), rows fetched and written."""
        after = data.db_counters(self.database_url)
        delta = {key: after[key] - before[key] for key in after}
        per = {key: round(value / max(1, operations), 2) for key, value in delta.items()}
        self.measurements.setdefault("db", {})[name] = {"total": delta, "per_operation": per}
        say(
            f"{name}: DB per operation: {per['xact_commit']} commits, "
            f"{per['tup_inserted']} rows inserted, {per['tup_updated']} updated, "
            f"{per['tup_fetched']} fetched; {delta['sessions']} sessions opened"
        )

    def _auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    @property
    def graphql_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/graphql"

    # -- the measurements --------------------------------------------------------------------

    def phase_create(self) -> None:
        """(a) createOrder against the floor and the stack floor, same body, same load. The
        Celery workers are not started yet: the floors' LPUSHed messages have no consumer
        either, so all three measure the request path alone (the service's publish to Redis
        included)."""
        settings = self.settings
        service = self._spec(
            self.graphql_url, CREATE_TEMPLATE, SUCCESS, headers=self._auth("create"), prefix="svc"
        )
        floor_url = f"http://127.0.0.1:{self.floor_port}/graphql"
        floor = self._spec(floor_url, CREATE_TEMPLATE, SUCCESS, prefix="floor")
        warm = {"duration": settings.warmup}
        stack_url = f"http://127.0.0.1:{self.stack_floor_port}/graphql"
        stack = self._spec(stack_url, CREATE_TEMPLATE, SUCCESS, prefix="stack")
        with step("(a) createOrder vs floor and stack floor"):
            floor_result = self.load(
                "create-floor",
                floor,
                warm=self._spec(floor_url, CREATE_TEMPLATE, SUCCESS, prefix="floor-warm", **warm),
            )
            stack_result = self.load(
                "create-stack-floor",
                stack,
                warm=self._spec(stack_url, CREATE_TEMPLATE, SUCCESS, prefix="stack-warm", **warm),
            )
            service_result = self.load(
                "create-service",
                service,
                warm=self._spec(
                    self.graphql_url,
                    CREATE_TEMPLATE,
                    SUCCESS,
                    headers=self._auth("create"),
                    prefix="svc-warm",
                    **warm,
                ),
            )
        self.measurements["create"] = {
            "service": asdict(service_result),
            "floor": asdict(floor_result),
            "stack_floor": asdict(stack_result),
            "floor_rows": self._floor_rows("floor"),
            "stack_floor_rows": self._floor_rows("stack"),
            "floor_messages": self.redis.llen(self.floor_list),
            "stack_floor_messages": self.redis.llen(self.stack_floor_list),
        }
        if settings.profile:
            self.profile_create()
        self._discard_backlog()

    def _floor_rows(self, prefix: str) -> int:
        """Rows a floor wrote: its requests' idempotency keys start with its loads' prefix."""
        with data.connect(self.database_url) as connection:
            return data.floor_rows(connection, prefix)

    def profile_create(self) -> None:
        """py-spy on the web workers during two more createOrder loads (not measurements):
        `gil` samples only the thread holding the GIL (where Python CPU time goes, which bounds
        a gthread worker), `active` every thread not sleeping (waits on sockets included)."""
        from bench import profile

        seconds = self.settings.duration
        summaries = {}
        for view in ("gil", "active"):
            raw = self.work_dir / f"profile-create-{view}.txt"
            with step(f"profiling createOrder: {seconds:.0f} s of py-spy ({view} view)"):
                recorder = profile.record(self.web.pid, seconds + 1, raw, gil=view == "gil")
                time.sleep(0.5)  # py-spy attaches
                spec = self._spec(
                    self.graphql_url,
                    CREATE_TEMPLATE,
                    SUCCESS,
                    headers=self._auth("create"),
                    prefix=f"svc-profile-{view}",
                )
                run_load(spec, self.settings.loadgen, self.work_dir, f"create-profiled-{view}")
                recorder.wait(timeout=60)
            if not raw.exists():
                self.problems.append(f"py-spy wrote no profile; see {raw.with_suffix('.log')}")
                continue
            summary = profile.summarise(raw)
            raw.with_name(f"{raw.stem}-summary.txt").write_text(summary.text() + "\n")
            summaries[view] = {"raw": str(raw), **summary.as_dict()}
            say(f"profile: {raw} (summary beside it)")
        self.measurements["profile_create"] = summaries

    def _discard_backlog(self) -> None:
        """The SMS of phase (a) would keep the worker busy for minutes: once the web's relay
        has published them, drop the tasks and mark the rows FAILED (no measurement uses them)."""
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            length = self.redis.llen(self.sms_queue)
            if length != last:
                last, stable_since = length, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                break
            time.sleep(0.1)
        self.redis.delete(self.sms_queue)
        with data.connect(self.database_url) as connection:
            discarded = data.discard_pending(connection, "bench: createOrder backlog, not sent")
        self.measurements["create"]["sms_tasks_published"] = last
        say(f"discarded the {discarded} SMS of the createOrder phase")

    def quiesce(self, timeout: float = 120) -> None:
        """Let the worker finish the SMS still queued (gateway at 0 ms), so the next phase
        starts on an idle worker. Rows still QUEUED while the broker holds no task for them
        for 3 s lost their task (in production the sweep re-publishes them after 45 s; no
        beat runs here): they are noted and discarded, as is a backlog outlasting `timeout`."""
        self.set_gateway_latency(0)
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        with data.connect(self.database_url) as connection:
            while data.pending_notifications(connection):
                check_alive(self.workers)
                now = time.monotonic()
                if not self._broker_empty(self.sms_queue):
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since > 3:
                    self.notes.append(
                        "notifications left QUEUED with no task in the broker (lost until the "
                        f"sweep): {data.pending_breakdown(connection)}"
                    )
                    data.discard_pending(connection, "bench: task lost, discarded")
                    break
                if now > deadline:
                    self.problems.append(
                        f"SMS backlog not drained in {timeout:.0f} s: "
                        f"{data.pending_breakdown(connection)}, "
                        f"{self.redis.llen(self.sms_queue)} tasks in the queue"
                    )
                    self.redis.delete(self.sms_queue)
                    data.discard_pending(connection, "bench: backlog discarded")
                    break
                time.sleep(0.1)

    def phase_confirm(self) -> None:
        """(b) confirmOrder p99 with the gateway at 0 ms and at 200 ms: a request never waits
        for an SMS, so the gateway's latency should not show in it."""
        user = USERS["confirm"]
        warm_count, measure_count = self.settings.confirm_orders
        with data.connect(self.database_url) as connection:
            ids = data.bulk_orders(
                connection,
                customer_id=user.customer_id,
                subject=user.sub,
                count=2 * (warm_count + measure_count),
            )
        values = [str(order_id) for order_id in ids]
        results: dict[str, Any] = {}
        with step("(b) confirmOrder at gateway 0 ms and 200 ms"):
            for index, latency in enumerate((0.0, 0.2)):
                self.quiesce()
                self.set_gateway_latency(latency)
                chunk = values[index * (warm_count + measure_count) :]
                common = {
                    "headers": self._auth("confirm"),
                    "connections": self.settings.latency_connections,
                }
                warm = self._spec(
                    self.graphql_url,
                    CONFIRM_TEMPLATE,
                    SUCCESS,
                    values=chunk[:warm_count],
                    duration=self.settings.warmup,
                    **common,
                )
                spec = self._spec(
                    self.graphql_url,
                    CONFIRM_TEMPLATE,
                    SUCCESS,
                    values=chunk[warm_count : warm_count + measure_count],
                    **common,
                )
                name = f"confirm-gateway-{int(latency * 1000)}ms"
                results[f"gateway_{int(latency * 1000)}ms"] = asdict(
                    self.load(name, spec, warm=warm)
                )
            self.quiesce()
        self.measurements["confirm"] = results

    def phase_documents(self) -> None:
        """(f) The hostile documents of bench/documents.py, sent one at a time while nothing
        else runs (without a token, or as an admin who sees a page of orders of other
        customers): how long the worst takes to be answered."""
        sends = 3 if self.settings.smoke else 15
        headers = {"Content-Type": "application/json"}
        signed_in = {**headers, "Authorization": f"Bearer {self.tokens['admin']}"}
        with data.connect(self.database_url) as connection:
            data.customers_with_an_order(connection, count=documents.ORDERS_OF_OTHERS)

        def post(body: str, as_admin: bool) -> tuple[int, float, int]:
            started = time.perf_counter()
            status, answer = self._post(
                self.web_port, "/graphql", body, signed_in if as_admin else headers
            )
            took = time.perf_counter() - started
            return status, took, len(json.dumps(answer, ensure_ascii=False).encode())

        with step(f"(f) {len(documents.HOSTILE)} hostile documents, {sends} times each"):
            results = documents.time_hostile(post, sends)
        broken = {
            name: found["statuses"]
            for name, found in results["documents"].items()
            if any(status >= 500 for status in found["statuses"])
        }
        if broken:
            self.problems.append(f"hostile documents answered 5xx: {broken}")
        self.measurements["documents"] = results

    def phase_my_orders(self) -> None:
        """(c) myOrders(first: 20) p50 for a customer with few orders and one with very many."""
        sizes = {"small": self.settings.small_orders, "large": self.settings.large_orders}
        loading = step(f"(c) bulk-loading {sizes['small']:,} + {sizes['large']:,} orders")
        with loading, data.connect(self.database_url) as connection:
            for role, count in sizes.items():
                user = USERS[role]
                data.bulk_orders(
                    connection,
                    customer_id=user.customer_id,
                    subject=user.sub,
                    count=count,
                    return_ids=False,
                )
            data.settle(connection, "orders")
        results: dict[str, Any] = {}
        with step("(c) myOrders(first: 20)"):
            for role, count in sizes.items():
                common = {
                    "headers": self._auth(role),
                    "connections": self.settings.latency_connections,
                }
                marker = '"myOrders":[{'
                warm = self._spec(
                    self.graphql_url,
                    MY_ORDERS_BODY,
                    marker,
                    duration=self.settings.warmup,
                    **common,
                )
                spec = self._spec(self.graphql_url, MY_ORDERS_BODY, marker, **common)
                results[role] = {
                    "orders": count,
                    **asdict(self.load(f"my-orders-{count}", spec, warm=warm)),
                }
        self.measurements["my_orders"] = results

    def phase_drain(self) -> None:
        """(d) SMS drain against a no-op drain, on the same Celery app, pool and concurrency."""
        count = self.settings.drain_count
        user = USERS["drain"]
        self.quiesce()  # before the rows exist: they are published below, not by the sweep
        with data.connect(self.database_url) as connection:
            data.bulk_orders(
                connection,
                customer_id=user.customer_id,
                subject=user.sub,
                count=count,
                return_ids=False,
            )
            ids = data.queued_notifications(connection, customer_id=user.customer_id)
        ids_file = self.work_dir / "drain-ids.txt"
        ids_file.write_text("\n".join(map(str, ids)) + "\n")
        self._gateway_admin("reset", {})
        self.set_gateway_latency(0.1)
        with step(f"(d) SMS drain of {count:,} at gateway 100 ms"):
            sms = self._drain(
                "drain-sms",
                self._publisher(self.sms_queue, "--relay", "--ids-file", str(ids_file)),
                count,
                lambda deadline: self._wait_sms_sent(count, deadline),
                self.workers,
            )
        gateway = self._gateway_admin("stats")
        self.set_gateway_latency(0)
        with data.connect(self.database_url) as connection:
            progress = data.drain_progress(connection, customer_id=user.customer_id)
        if progress["sent"] != count:
            self.problems.append(f"SMS drain: {progress['sent']} of {count} SENT ({progress})")
        sms |= {
            "sent": progress["sent"],
            "failed": progress["failed"],
            "gateway_max_in_flight": gateway.get("max_in_flight"),
            "gateway_requests": gateway.get("requests"),
        }
        with step(f"(d) no-op drain of {count:,}"):
            noop = self._drain(
                "drain-noop",
                self._publisher(self.noop_queue, "--task", NOOP_TASK, "--count", str(count)),
                count,
                lambda deadline: self._wait_broker_empty(self.noop_queue, deadline),
                self.noop_workers,
            )
        self.measurements["drain"] = {"count": count, "sms": sms, "noop": noop}
        if self.settings.profile:
            self.profile_drain()
        say(f"drain: {sms['per_second']:,.0f} SMS/s, {noop['per_second']:,.0f} no-op tasks/s")

    def profile_drain(self) -> None:
        """py-spy (GIL view) on the Celery worker while it sends more SMS at 100 ms (not a
        measurement): a second notification for up to 2,000 of the drain customer's orders."""
        from bench import profile

        user = USERS["drain"]
        self.quiesce()
        with data.connect(self.database_url) as connection:
            ids = data.queued_notifications(
                connection, customer_id=user.customer_id, kind="ORDER_CONFIRMED", limit=2000
            )
        ids_file = self.work_dir / "drain-profile-ids.txt"
        ids_file.write_text("\n".join(map(str, ids)) + "\n")
        self.set_gateway_latency(0.1)
        raw = self.work_dir / "profile-drain-gil.txt"
        seconds = self.settings.duration
        with step(f"profiling the SMS drain: {seconds:.0f} s of py-spy on the worker"):
            recorder = profile.record(self.worker.pid, seconds, raw, gil=True)
            time.sleep(0.5)
            subprocess.run(
                self._publisher(self.sms_queue, "--relay", "--ids-file", str(ids_file)),
                cwd=ROOT,
                env=self.dev_env,
                capture_output=True,
                check=True,
                timeout=60,
            )
            recorder.wait(timeout=60)
        self.quiesce()
        if raw.exists():
            summary = profile.summarise(raw)
            raw.with_name(f"{raw.stem}-summary.txt").write_text(summary.text() + "\n")
            self.measurements.setdefault("profile_drain", {})["gil"] = {
                "raw": str(raw),
                **summary.as_dict(),
            }
            say(f"profile: {raw} (summary beside it)")

    def _publisher(self, queue: str, *how: str) -> list[str]:
        """The command of a bench.publish process sending tasks to `queue` (`how`: its
        `--task ...` or `--relay ...` arguments)."""
        return [
            *(sys.executable, "-m", "bench.publish", "--broker", self.redis_url),
            *("--queue", queue, *how),
        ]

    def _wait_sms_sent(self, count: int, deadline: float) -> float | None:
        """Wait until every SMS of the drain customer is SENT (or FAILED); return the moment
        of the last sent_at (epoch), or None at `deadline`.

        Cheap on the system under test: the gateway's in-memory counter is polled until it
        saw `count` requests, and only then the database, whose sent_at gives the exact end."""
        while self._gateway_admin("stats")["requests"] < count:
            check_alive(self.workers)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        customer = USERS["drain"].customer_id
        with data.connect(self.database_url) as connection:
            while time.monotonic() < deadline:
                progress = data.drain_progress(connection, customer_id=customer)
                if progress["pending"] == 0 and progress["sent"] + progress["failed"] >= count:
                    return progress["last_sent_at"] or time.time()
                time.sleep(0.02)
        return None

    def _wait_broker_empty(self, queue: str, deadline: float) -> float | None:
        """Wait until `queue` holds no message and none is delivered but unacknowledged (the
        worker acknowledges after running a task); return that moment (epoch), polled every
        20 ms, or None at `deadline`."""
        while time.monotonic() < deadline:
            check_alive(self.noop_workers)
            if self._broker_empty(queue):
                return time.time()
            time.sleep(0.02)
        return None

    def _broker_empty(self, queue: str) -> bool:
        """No message waiting in `queue` and none delivered but unacknowledged."""
        if self.redis.llen(queue):
            return False
        for raw in self.redis.hvals("unacked"):
            with contextlib.suppress(ValueError, IndexError):
                if json.loads(raw)[2] == queue:
                    return False
        return True

    def _drain(
        self,
        name: str,
        publish_command: list[str],
        count: int,
        wait: Callable[[float], float | None],
        workers: list[Managed],
    ) -> dict[str, Any]:
        """Publish `count` tasks from a helper process; the time from its first publish until
        `wait` (given a deadline) says the last one is done."""
        meter, counters = self.cpu_meter(), data.db_counters(self.database_url)
        publisher = subprocess.Popen(
            publish_command, cwd=ROOT, env=self.dev_env, stdout=subprocess.PIPE, text=True
        )
        while publisher.poll() is None:  # before it finishes, the queue may be empty
            check_alive(workers)
            time.sleep(0.02)
        stdout, _ = publisher.communicate(timeout=30)
        if publisher.returncode != 0:
            raise BenchError(f"bench.publish failed with status {publisher.returncode}")
        finished_at = wait(time.monotonic() + 60 + count / 10)
        self.record_cpu(name, meter, count)
        self.record_db(name, counters, count)
        published = json.loads(stdout.strip().splitlines()[-1])
        if finished_at is None:
            self.problems.append(f"{name}: not drained in time")
            finished_at = time.time()
        seconds = finished_at - published["started"]
        return {
            "published_from": published["started"],
            "publish_seconds": round(published["finished"] - published["started"], 3),
            "seconds": round(seconds, 3),
            "per_second": round(count / seconds, 1),
        }

    def phase_memory(self) -> None:
        """(e) Peak resident memory (VmHWM) of web workers and the Celery worker, after all
        of the load above."""
        web = {pid: memory_kb(pid) for pid in children(self.web.pid)}
        worker_pids = [self.worker.pid, *children(self.worker.pid)]
        celery = {pid: memory_kb(pid) for pid in worker_pids}
        self.measurements["memory"] = {
            "web_master": memory_kb(self.web.pid),
            "web_workers": web,
            "celery_worker": celery,
            "web_worker_peak_mb": max((m["VmHWM"] for m in web.values()), default=0) / 1024,
            "celery_worker_peak_mb": max(m["VmHWM"] for m in celery.values()) / 1024,
        }

    def run(self) -> None:
        """Every phase chosen (all by default), then the memory of what ran."""
        only = self.settings.only
        self.start()
        if "documents" in only:
            self.phase_documents()
        if "create" in only:
            self.phase_create()
        self._start_workers()
        if "confirm" in only:
            self.phase_confirm()
        if "my-orders" in only:
            self.phase_my_orders()
        if "drain" in only:
            self.phase_drain()
        self.phase_memory()


# -- the verdict ------------------------------------------------------------------------------


def rows_for(measurements: dict[str, Any], settings: Settings) -> list[Row]:
    """The table: each figure, and the issue's targets as ratios from this one run."""
    rows: list[Row] = []
    create = measurements.get("create", {})
    service, floor = create.get("service", {}), create.get("floor", {})
    stack = create.get("stack_floor", {})
    rows += [
        Row("createOrder throughput", service.get("rps"), "req/s"),
        Row("createOrder p50", service.get("p50_ms"), "ms"),
        Row("createOrder p99", service.get("p99_ms"), "ms"),
        Row("floor throughput", floor.get("rps"), "req/s"),
        Row("floor p50", floor.get("p50_ms"), "ms"),
        Row("floor p99", floor.get("p99_ms"), "ms"),
        check(
            "createOrder/floor throughput",
            ratio(service.get("rps"), floor.get("rps")),
            "x",
            ">=",
            0.6,
        ),
        check(
            "createOrder/floor p99",
            ratio(service.get("p99_ms"), floor.get("p99_ms")),
            "x",
            "<=",
            2.0,
        ),
        # No targets: how much of the gap to the floor the stack itself takes.
        Row("stack floor throughput", stack.get("rps"), "req/s"),
        Row("stack floor p99", stack.get("p99_ms"), "ms"),
        Row("stack floor/floor throughput", ratio(stack.get("rps"), floor.get("rps")), "x"),
        Row("createOrder/stack floor throughput", ratio(service.get("rps"), stack.get("rps")), "x"),
    ]
    confirm = measurements.get("confirm", {})
    fast = confirm.get("gateway_0ms", {}).get("p99_ms")
    slow = confirm.get("gateway_200ms", {}).get("p99_ms")
    rows += [
        Row("confirmOrder p99, gateway 0 ms", fast, "ms"),
        Row("confirmOrder p99, gateway 200 ms", slow, "ms"),
        check("confirmOrder p99 200 ms/0 ms", ratio(slow, fast), "x", "<=", 1.1),
    ]
    my_orders = measurements.get("my_orders", {})
    small, large = my_orders.get("small", {}), my_orders.get("large", {})
    rows += [
        Row(f"myOrders p50, {settings.small_orders:,} orders", small.get("p50_ms"), "ms"),
        Row(f"myOrders p50, {settings.large_orders:,} orders", large.get("p50_ms"), "ms"),
        check(
            f"myOrders p50 {_short(settings.large_orders)}/{_short(settings.small_orders)}",
            ratio(large.get("p50_ms"), small.get("p50_ms")),
            "x",
            "<=",
            1.3,
        ),
    ]
    drain = measurements.get("drain", {})
    sms = drain.get("sms", {}).get("per_second")
    noop = drain.get("noop", {}).get("per_second")
    rows += [
        check("SMS drain, gateway 100 ms", sms, "SMS/s", ">=", 300),
        Row("Celery no-op drain", noop, "tasks/s"),
        check("SMS drain/no-op drain", ratio(sms, noop), "x", ">=", 0.7),
    ]
    hostile = measurements.get("documents", {})
    rows += [
        check(
            f"hostile document, slowest median ({hostile.get('worst', '-')})",
            hostile.get("worst_median_ms"),
            "ms",
            "<=",
            50,
        )
    ]
    memory = measurements.get("memory", {})
    rows += [
        check("web worker peak RSS", memory.get("web_worker_peak_mb"), "MB", "<", 150),
        check("Celery worker peak RSS", memory.get("celery_worker_peak_mb"), "MB", "<", 200),
    ]
    return [row for row in rows if _phase(row.metric) in (*settings.only, "memory")]


def _phase(metric: str) -> str:
    """The phase a row of the table belongs to."""
    for prefix, phase in (
        ("createOrder", "create"),
        ("floor", "create"),
        ("stack floor", "create"),
        ("confirmOrder", "confirm"),
        ("myOrders", "my-orders"),
        ("SMS", "drain"),
        ("Celery no-op", "drain"),
        ("hostile document", "documents"),
    ):
        if metric.startswith(prefix):
            return phase
    return "memory"


def _short(count: int) -> str:
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1_000 and count % 1_000 == 0:
        return f"{count // 1_000}k"
    return str(count)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _Cleanup(contextlib.ExitStack):
    """An ExitStack whose unwinding a second Ctrl-C or SIGTERM cannot cut short."""

    def __exit__(self, *exc_info: Any) -> bool:
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
        try:
            return super().__exit__(*exc_info)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    os.chdir(ROOT)
    machine = machine_info(ROOT)
    started = time.monotonic()
    mode = "smoke" if settings.smoke else "full"
    say(f"{mode} run, load generator {settings.loadgen}, logs in {settings.log_dir}")
    bench: Bench | None = None
    status = 0
    error: str | None = None
    try:
        with _Cleanup() as stack:
            bench = Bench(settings, stack)
            bench.run()
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    except Exception as failure:  # reported below with whatever was measured
        error = f"{type(failure).__name__}: {failure}"
        say(f"the run failed: {error}")
        if not isinstance(failure, BenchError):
            traceback.print_exc()
        status = 2
    assert bench is not None
    rows = rows_for(bench.measurements, settings)
    problems = [*bench.problems, *([error] if error else [])]
    missed = [row for row in rows if row.passed is False]
    if bench.measurements:
        print(format_table(rows))
    document = {
        "mode": mode,
        "command": shlex.join([os.path.basename(sys.executable), "-m", "bench.run", *sys.argv[1:]]),
        "machine": machine,
        "seconds": round(time.monotonic() - started, 1),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "measurements": bench.measurements,
        "problems": problems,
        "notes": bench.notes,
        "targets_met": not missed and not problems,
    }
    write_results(settings.results_path, document, rows)
    say(f"results in {settings.results_path}")
    for note in bench.notes:
        say(f"note: {note}")
    for problem in problems:
        say(f"problem: {problem}")
    if problems:
        return 2
    if missed and not settings.smoke:
        say(
            "targets missed: "
            + "; ".join(f"{r.metric} {r.shown_value} ({r.target})" for r in missed)
        )
        return 1
    if missed:
        say("smoke run: timings are not judged (" + ", ".join(r.metric for r in missed) + ")")
    return status


if __name__ == "__main__":
    sys.exit(main())
