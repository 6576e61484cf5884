"""One benchmark run: the services it started, the figures it measured, and how it measures.

The phases (bench/phases.py, bench/drain.py, bench/order_to_sms.py) are functions of a
`Bench`; each puts its figures under `bench.measurements` and anything that makes a figure
untrustworthy under `bench.problems`.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from bench import data
from bench.load import LoadResult, LoadSpec, run_load
from bench.procs import CpuMeter, cpu_line
from bench.settings import Settings
from bench.start import Services, say


@dataclass
class Bench:
    """The settings, the services and what has been measured so far."""

    settings: Settings
    services: Services
    measurements: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # a figure cannot be trusted
    notes: list[str] = field(default_factory=list)  # worth knowing, not fatal

    # -- load --------------------------------------------------------------------------------

    def spec(self, url: str, template: str, marker: str, **kwargs: Any) -> LoadSpec:
        """A closed-loop load of `--connections` for `--duration` unless told otherwise."""
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
        services = self.services
        services.check_alive()
        if warm is not None and self.settings.warmup > 0:
            run_load(warm, self.settings.loadgen, services.work_dir, f"{name}-warmup")
        meter, counters = self.cpu_meter(), data.db_counters(services.database_url)
        result = run_load(spec, self.settings.loadgen, services.work_dir, name)
        self.record_cpu(name, meter, result.requests)
        self.record_db(name, counters, result.requests)
        self.problems += result.problems(name)
        say(
            f"{name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms ({result.requests} requests, {result.failures} failed)"
        )
        return result

    # -- who used what -----------------------------------------------------------------------

    def cpu_meter(self) -> CpuMeter:
        """Start measuring who uses the CPU: our processes, PostgreSQL, Redis, the rest."""
        trees = {
            process.name: process.pid
            for process in self.services.procs.started
            if process.name in ("web", "floor", "stack-floor", "sms-gateway")
            or process.name.startswith(("worker", "noop-worker"))
        }
        return CpuMeter(trees, split=("web", "floor", "stack-floor"))

    def record_cpu(self, name: str, meter: CpuMeter, operations: int) -> None:
        """Who used the CPU during measurement `name`, in % of a core and in ms per
        operation (request or task)."""
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
        after = data.db_counters(self.services.database_url)
        delta = {key: after[key] - before[key] for key in after}
        per = {key: round(value / max(1, operations), 2) for key, value in delta.items()}
        self.measurements.setdefault("db", {})[name] = {"total": delta, "per_operation": per}
        say(
            f"{name}: DB per operation: {per['xact_commit']} commits, "
            f"{per['tup_inserted']} rows inserted, {per['tup_updated']} updated, "
            f"{per['tup_fetched']} fetched; {delta['sessions']} sessions opened"
        )

    # -- between phases ----------------------------------------------------------------------

    def broker_empty(self, queue: str) -> bool:
        """No message waiting in `queue` and none delivered but unacknowledged."""
        client = self.services.redis
        if client.llen(queue):
            return False
        for raw in client.hvals("unacked"):
            with contextlib.suppress(ValueError, IndexError):
                if json.loads(raw)[2] == queue:
                    return False
        return True

    def quiesce(self, timeout: float = 120) -> None:
        """Let the worker finish the SMS still queued (gateway at 0 ms), so the next phase
        starts on an idle worker. Rows still QUEUED while the broker holds no task for them
        for 3 s lost their task (in production the sweep re-publishes them after 45 s; no
        beat runs here): they are noted and discarded, as is a backlog outlasting `timeout`."""
        services = self.services
        services.set_gateway_latency(0)
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        with data.connect(services.database_url) as connection:
            while data.pending_notifications(connection):
                services.check_alive(services.workers)
                now = time.monotonic()
                if not self.broker_empty(services.sms_queue):
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
                        f"{services.redis.llen(services.sms_queue)} tasks in the queue"
                    )
                    services.redis.delete(services.sms_queue)
                    data.discard_pending(connection, "bench: backlog discarded")
                    break
                time.sleep(0.1)
