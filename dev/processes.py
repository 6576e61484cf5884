"""Starting, sharing and stopping the servers dev.services provides: child processes, stop
signals, ports, and the locks under var/ that let concurrent runs share embedded servers.

Linux only: it relies on signal.sigtimedwait and prctl.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1

# Signals ignored when we started (nohup) stay ignored.
STOP_SIGNALS = {
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


def say(message: str) -> None:
    """Tell the person running dev.services, on stderr (stdout belongs to CMD)."""
    print(message, file=sys.stderr, flush=True)


def var_dir() -> Path:
    """Return the directory holding embedded servers' data and locks."""
    return Path(os.environ.get("DEV_SERVICES_VAR") or ROOT / "var").resolve()


def shown(path: Path) -> str:
    """`path` relative to the repository when inside it, for printing."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def safe(url: str) -> str:
    """`url` without user and password, for printing."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def probe_address(variable: str, port: int) -> tuple[str, int]:
    """The host:port in `variable` (default 127.0.0.1:`port`) where a running server is sought."""
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


def free_port(preferred: int = 0) -> int:
    """`preferred` if it is free on 127.0.0.1, else any free port."""
    if preferred and _port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


# -- processes and signals ------------------------------------------------------------------------


def block_stop_signals() -> None:
    """Block the stop signals and SIGCHLD, so they wait for `services.supervise` to take them
    with sigtimedwait: no handler can run at a bad moment. Children get the original mask."""
    global _original_mask
    _original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {signal.SIGCHLD})


def child_setup(die_with_parent: bool = False) -> Callable[[], None]:
    """A preexec_fn restoring the signal mask, and with `die_with_parent` tying the child's life
    to ours (PR_SET_PDEATHSIG)."""
    # Children inherit our blocked signal mask, and services would ignore SIGTERM with it.
    libc = ctypes.CDLL(None, use_errno=True) if die_with_parent else None

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, _original_mask)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a service process in its own session, so a terminal's Ctrl-C reaches only CMD."""
    die_with_parent = kwargs.pop("die_with_parent", False)
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=child_setup(die_with_parent),
        **kwargs,
    )


def check_signals() -> None:
    """Raise Interrupted if a stop signal is waiting, so startup is abandoned early."""
    pending = signal.sigpending() & STOP_SIGNALS
    if pending:
        raise Interrupted(min(pending))


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `ready` until it is true; ServiceError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        check_signals()
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)


def alive(pid: int, marker: str) -> psutil.Process | None:
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


def terminate(process: subprocess.Popen[bytes] | psutil.Process, grace: float = 10) -> None:
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


def lease(
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


def stop_if_idle(name: str, stop: Callable[[], None]) -> bool:
    """Stop embedded server `name` unless a run uses it; True if it was not in use."""
    var = var_dir()
    with _mutex(var), (var / f"{name}.users").open("a") as users:
        if not _try_flock(users, fcntl.LOCK_EX):
            return False
        stop()
        return True
