"""Starting, watching and stopping the processes a benchmark run needs.

Every process runs in a session (process group) of its own, so stopping it stops whatever it
forked too (gunicorn's workers, say), and a Ctrl-C in the terminal reaches only the harness,
which then stops them in order. Each child also asks the kernel for SIGTERM if the harness dies,
so even a SIGKILLed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """The harness cannot go on; the message says why."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Managed:
    """A started process, its log file and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    grace: float = 15.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of its output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        """Raise BenchError if the process has exited."""
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with status {self.popen.returncode}; its last output "
                f"({self.log_path}):\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM its process group, then SIGKILL it after `grace` seconds."""
        for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.popen.poll() is not None and not _group_alive(self.popen.pid):
                    return
                time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Processes:
    """The processes of one run; `stop_all` stops them newest first."""

    log_dir: Path
    started: list[Managed] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path | None = None,
        grace: float = 15.0,
    ) -> Managed:
        """Start `args` with its output in <log_dir>/<name>.log."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        managed = Managed(name, popen, log_path, grace)
        self.started.append(managed)
        return managed

    def stop(self, managed: Managed) -> None:
        """Stop one process and forget it."""
        managed.stop()
        if managed in self.started:
            self.started.remove(managed)

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    process: Managed | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `ready` until it is true; BenchError after `timeout` s or if `process` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None:
            process.check()
        if ready():
            return
        if time.monotonic() > deadline:
            tail = f"; its last output:\n{process.log_tail()}" if process else ""
            raise BenchError(f"{what} not ready after {timeout:.0f} s{tail}")
        time.sleep(interval)


def http_status(url: str, method: str = "GET", timeout: float = 2.0) -> int | None:
    """The HTTP status `url` answers with, or None if it does not answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request(method, parts.path or "/")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def request_json(
    port: int, method: str, path: str, body: str | None, headers: dict[str, str]
) -> tuple[int, Any]:
    """One request to a local service: its status and JSON answer (None if not JSON)."""
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


def log_contains(process: Managed, pattern: str) -> bool:
    """True once the process has written a line matching the regular expression."""
    try:
        return re.search(pattern, process.log_path.read_text(errors="replace")) is not None
    except OSError:
        return False


def memory_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak resident) and VmRSS (resident now) of a process, in KiB, from /proc."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                values[name] = int(rest.split()[0])
    return values


def children(pid: int) -> list[int]:
    """The pids of a process's direct children."""
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children()]
    return []


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def _named_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds used so far by every process whose name is one of `names`."""
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in names:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def _machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(value) for value in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Who used the CPU during a measurement, in percent of one core (200% = both of 2 cores).

    Groups: each named process tree (with its children), PostgreSQL and Redis (every process of
    those names on the machine), the load generator (children this process reaped: wrk, the
    Python generator, the publisher), the harness itself, the whole machine, and "other":
    what the machine used beyond all of those, i.e. noise from anything else running.
    """

    def __init__(self, trees: Mapping[str, int], split: Sequence[str] = ()) -> None:
        # Trees named in `split` are also shown per child process ("web/1234"): whether the
        # load is spread over gunicorn's workers.
        self.trees = dict(trees)
        self.split = {name: children(self.trees[name]) for name in split if name in self.trees}
        self.started = time.monotonic()
        self.before = self._snapshot()

    def _snapshot(self) -> dict[str, float]:
        children_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        snapshot = {name: _tree_cpu(pid) for name, pid in self.trees.items()}
        for name, pids in self.split.items():
            snapshot |= {f"{name}/{pid}": _tree_cpu(pid) for pid in pids}
        snapshot["postgres"] = _named_cpu(("postgres",))
        snapshot["redis"] = _named_cpu(("redis-server",))
        snapshot["loadgen"] = children_usage.ru_utime + children_usage.ru_stime
        snapshot["harness"] = own.ru_utime + own.ru_stime
        snapshot["machine"] = _machine_busy()
        return snapshot

    def stop(self) -> dict[str, float]:
        """Percent of one core per group since the meter started."""
        after = self._snapshot()
        wall = self.seconds = max(1e-6, time.monotonic() - self.started)
        used = {name: max(0.0, after[name] - self.before[name]) for name in after}
        known = sum(value for name, value in used.items() if name != "machine" and "/" not in name)
        used["other"] = max(0.0, used["machine"] - known)
        return {name: round(100 * value / wall, 1) for name, value in used.items()}


def cpu_line(percent: Mapping[str, float]) -> str:
    """'web 182%, postgres 31%, ...' for the groups that used at least 1%."""
    shown = [(name, value) for name, value in percent.items() if value >= 1 and name != "machine"]
    shown.sort(key=lambda item: -item[1])
    parts = ", ".join(f"{name} {value:.0f}%" for name, value in shown)
    return f"CPU (% of one core): {parts}; machine {percent.get('machine', 0):.0f}%"
