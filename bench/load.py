"""Load generation from a separate process on 127.0.0.1: wrk when installed, else Python.

Both generators do the same thing: N keep-alive connections, each sending its next request as
soon as the previous answer arrived (a closed loop), for a fixed time. The JSON body comes from
a template whose ``@VALUE@`` is replaced per request, by a value unique to the run (a fresh
idempotency key) or by the next line of a list (an order id to confirm, each used once). A
response is a success only if it is HTTP 200 and contains a marker string (e.g.
``"success":true``): an error answered fast must not pass for throughput.

`run_load` is what the harness calls. The Python generator also runs on its own:

    python -m bench.load --spec spec.json     # prints one JSON result line

where spec.json holds the fields of `LoadSpec`.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import math
import multiprocessing
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PLACEHOLDER = "@VALUE@"
LUA_SCRIPT = Path(__file__).with_name("post.lua")


@dataclass(frozen=True)
class LoadSpec:
    """One measurement: what to send, how many connections, for how long."""

    url: str
    template: str
    marker: str
    connections: int
    duration: float
    headers: dict[str, str] = field(default_factory=dict)
    values: list[str] | None = None
    prefix: str = "k"
    processes: int = 2  # the Python generator's processes (it is bound by the GIL)


@dataclass(frozen=True)
class LoadResult:
    """What a measurement gave; latencies in milliseconds."""

    generator: str
    connections: int
    duration_s: float
    requests: int
    failures: int
    errors: int
    exhausted: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def failure_rate(self) -> float:
        return (self.failures + self.errors) / max(1, self.requests + self.errors)

    def problems(self, what: str) -> list[str]:
        """Why this measurement cannot be trusted, if it cannot."""
        found = []
        if self.requests == 0:
            found.append(f"{what}: no request completed")
        elif self.failure_rate > 0.01:
            found.append(
                f"{what}: {self.failures} failed responses and {self.errors} socket errors "
                f"in {self.requests} requests"
            )
        if self.exhausted:
            found.append(f"{what}: ran out of prepared values ({self.exhausted} reused)")
        return found


def available_generator(preference: str = "auto") -> str:
    """ "wrk" if asked for or found on PATH (with auto), else "python"."""
    if preference == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed (apt-get install wrk), use --loadgen python")
    if preference == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return preference


def run_load(spec: LoadSpec, generator: str, work_dir: Path, name: str) -> LoadResult:
    """Run one measurement with `generator` ("wrk" or "python") from a separate process."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if generator == "wrk":
        return _run_wrk(spec, work_dir, name)
    spec_file = work_dir / f"{name}.spec.json"
    spec_file.write_text(json.dumps(dataclasses.asdict(spec)))
    completed = subprocess.run(
        [sys.executable, "-m", "bench.load", "--spec", str(spec_file)],
        capture_output=True,
        text=True,
        timeout=spec.duration + 60,
        check=False,
    )
    (work_dir / f"{name}.out").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise RuntimeError(f"python load generator failed: {completed.stderr[-2000:]}")
    return LoadResult(**json.loads(completed.stdout.strip().splitlines()[-1]))


def _run_wrk(spec: LoadSpec, work_dir: Path, name: str) -> LoadResult:
    template = work_dir / f"{name}.body"
    template.write_text(spec.template)
    values = "-"
    if spec.values is not None:
        values_file = work_dir / f"{name}.values"
        values_file.write_text("\n".join(spec.values) + "\n")
        values = str(values_file)
    threads = max(1, min(2, spec.connections))
    command = ["wrk", "-t", str(threads), "-c", str(spec.connections)]
    command += ["-d", f"{max(1, round(spec.duration))}s", "--timeout", "10s"]
    for header, value in {"Content-Type": "application/json", **spec.headers}.items():
        command += ["-H", f"{header}: {value}"]
    command += ["-s", str(LUA_SCRIPT), spec.url, "--"]
    command += [str(template), values, spec.prefix, str(threads), spec.marker]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=spec.duration + 60, check=False
    )
    (work_dir / f"{name}.out").write_text(completed.stdout + completed.stderr)
    found = re.search(r"^BENCH_RESULT (\{.*\})$", completed.stdout, re.MULTILINE)
    if completed.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-2000:]}")
    data = json.loads(found[1])
    duration = data["duration_us"] / 1e6
    latency = data["latency_us"]
    return LoadResult(
        generator="wrk",
        connections=spec.connections,
        duration_s=round(duration, 3),
        requests=data["requests"],
        failures=data["failures"],
        errors=sum(data["errors"].values()) - data["errors"]["status"],
        exhausted=data["exhausted"],
        rps=round(data["requests"] / duration, 1) if duration else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        mean_ms=round(latency["mean"] / 1000, 3),
    )


# -- the Python generator -------------------------------------------------------------------------


def percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _connection_loop(
    spec: LoadSpec, slot: int, slots: int, deadline: float, out: dict[str, Any]
) -> None:
    """One keep-alive connection sending requests until `deadline`; fills `out`."""
    parts = urlsplit(spec.url)
    path = parts.path or "/"
    headers = {"Content-Type": "application/json", **spec.headers}
    head, found, tail = spec.template.partition(PLACEHOLDER)
    latencies: list[float] = []
    failures = errors = exhausted = 0
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    counter = 0
    while time.monotonic() < deadline:
        if not found:
            body = head
        elif spec.values is not None:
            index = slot + counter * slots
            if index >= len(spec.values):
                exhausted += 1
            body = head + spec.values[index % len(spec.values)] + tail
        else:
            body = f"{head}{spec.prefix}-{slot}-{counter}{tail}"
        counter += 1
        started = time.perf_counter()
        try:
            connection.request("POST", path, body.encode(), headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200 or spec.marker.encode() not in answer:
            failures += 1
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
    connection.close()
    out.update(latencies=latencies, failures=failures, errors=errors, exhausted=exhausted)


def _process(spec: LoadSpec, first_slot: int, slots: int, count: int, start_at: float, queue):
    """One generator process: `count` connections on threads, results sent to `queue`."""
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + spec.duration
    outs: list[dict[str, Any]] = [{} for _ in range(count)]
    threads = [
        threading.Thread(target=_connection_loop, args=(spec, first_slot + i, slots, deadline, o))
        for i, o in enumerate(outs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(outs)


def generate(spec: LoadSpec) -> LoadResult:
    """Run the Python generator in this process tree and return its result."""
    processes = max(1, min(spec.processes, spec.connections))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + 0.5  # every process starts its clock together
    shares = [
        spec.connections // processes + (i < spec.connections % processes) for i in range(processes)
    ]
    workers, first = [], 0
    for share in shares:
        worker = context.Process(
            target=_process, args=(spec, first, spec.connections, share, start_at, queue)
        )
        worker.start()
        workers.append(worker)
        first += share
    outs = [out for _ in workers for out in queue.get(timeout=spec.duration + 60)]
    for worker in workers:
        worker.join()
    latencies = sorted(value for out in outs for value in out["latencies"])
    duration = spec.duration
    return LoadResult(
        generator="python",
        connections=spec.connections,
        duration_s=duration,
        requests=len(latencies),
        failures=sum(out["failures"] for out in outs),
        errors=sum(out["errors"] for out in outs),
        exhausted=sum(out["exhausted"] for out in outs),
        rps=round(len(latencies) / duration, 1),
        p50_ms=round(percentile(latencies, 50), 3),
        p90_ms=round(percentile(latencies, 90), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        max_ms=round(latencies[-1], 3) if latencies else 0.0,
        mean_ms=round(sum(latencies) / len(latencies), 3) if latencies else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="JSON file of LoadSpec fields")
    args = parser.parse_args(argv)
    spec = LoadSpec(**json.loads(args.spec.read_text()))
    print(json.dumps(dataclasses.asdict(generate(spec))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
