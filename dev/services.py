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

The servers are found or started by `dev.postgres_server` and `dev.redis_server`, with the
process and locking machinery of `dev.processes`. Linux only: it relies on signal.sigtimedwait
and prctl.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import psutil

from dev.postgres_server import resolve_postgres, running_postgres, stop_embedded_postgres
from dev.processes import (
    ROOT,
    STOP_SIGNALS,
    Interrupted,
    ServiceError,
    block_stop_signals,
    check_signals,
    child_setup,
    free_port,
    safe,
    say,
    spawn,
    terminate,
    var_dir,
    wait_until,
)
from dev.redis_server import resolve_redis, running_redis, stop_embedded_redis

IDP_REALM_PATH = "/realms/donfiles"
STOP_GRACE = 30.0  # seconds CMD gets after SIGTERM/SIGHUP before it is killed
_SI_KERNEL = 0x80  # si_code of signals the kernel sends, e.g. a terminal's Ctrl-C


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
        say(f"idp: {safe(issuer)} (from OIDC_ISSUER)")
        return {}
    port = free_port(8080)
    command = [sys.executable, "-m", "dev.idp", "--host", "127.0.0.1", "--port", str(port)]
    idp = spawn([*command, "--users", "dev/users.json"], cwd=ROOT, die_with_parent=True)
    stack.callback(terminate, idp)

    def ready() -> bool:
        if idp.poll() is not None:
            raise ServiceError(f"dev.idp exited with status {idp.returncode}")
        return _idp_ready(port)

    wait_until(ready, 15, f"dev.idp on port {port}")
    issuer = f"http://127.0.0.1:{port}{IDP_REALM_PATH}"
    say(f"idp: dev.idp at {issuer}")
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
        child = subprocess.Popen(command, env=env, preexec_fn=child_setup())
    except OSError as error:
        say(f"dev.services: cannot run {command[0]}: {error.strerror}")
        return 127
    kill_at = math.inf
    while child.poll() is None:
        info = signal.sigtimedwait(STOP_SIGNALS | {signal.SIGCHLD}, 0.5)
        if info is not None and info.si_signo in STOP_SIGNALS:
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
    # From here on stop signals wait for supervise(); check_signals() looks during startup.
    block_stop_signals()
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        env["DATABASE_URL"] = resolve_postgres(stack, args.database)
        check_signals()
        env["REDIS_URL"] = resolve_redis(stack)
        check_signals()
        if args.idp:
            env.update(resolve_idp(stack))
        check_signals()
        return supervise(args.command, env)


def env_command(args: argparse.Namespace) -> int:
    """Print `export` lines for services that already run; start nothing."""
    found = {"DATABASE_URL": running_postgres(args.database), "REDIS_URL": running_redis()}
    for name, value in found.items():
        if value is not None:
            print(f"export {name}={shlex.quote(value)}")
    missing = sorted(name for name, value in found.items() if value is None)
    for name in missing:
        say(f"dev.services: no server running for {name}")
    return 1 if missing else 0


def stop_command(args: argparse.Namespace) -> int:
    """Stop the embedded servers under var/ unless a running `run` still uses them."""
    if not var_dir().exists():
        return 0
    stoppers = (("postgres", stop_embedded_postgres), ("redis", stop_embedded_redis))
    busy = [name for name, stop in stoppers if not stop()]
    if busy:
        say(f"dev.services: {' and '.join(busy)} still used by a running dev.services, not stopped")
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
        say(f"dev.services: {error}")
        return 1
    except Interrupted as interruption:
        return 128 + interruption.signum


if __name__ == "__main__":
    sys.exit(main())
