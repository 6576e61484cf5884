"""The benchmark: the service beside its floors, in one run on this machine.

    python -m bench.run [--smoke] [--duration 10] [--profile] [--only PHASES]

It brings up PostgreSQL and Redis as the tests do (dev.services), a fresh database
`orders_bench_N` (N: the run's Redis database) with the migrations applied, the development
identity provider, the local SMS gateway, the service with its production config under
gunicorn (the Procfile's `web` line), its Celery worker (the Procfile's `worker` line), a
second worker running a no-op task, and the floor (bench/floor.py under `gunicorn -w 2`) and
the stack floor (bench/stack_floor.py: the floor's work through Flask, Ariadne and
Flask-SQLAlchemy, served the same way). Load comes from wrk (or bench/load.py) in a separate
process. Then, in this order (each phase can be chosen with --only; memory is always measured):

  documents     the hostile documents of bench/documents.py, first, while the machine is
                otherwise idle: the median answer of the slowest;
  create        createOrder (RS256 token, fresh idempotency key per call) vs the stack floor,
                and the raw floor for reference: req/s, p50, p99, web CPU per request;
  order-to-sms  createOrder at a fixed arrival rate (--order-rate, 100/s) with the gateway at
                0 ms: from each answer to the gateway receiving that order's SMS, p50 and p99;
  confirm       confirmOrder p99 with the gateway answering in 0 ms and in 200 ms;
  my-orders     myOrders(first: 20) for a customer with 10,000 orders and one with 1,000,000:
                p50, and the web's CPU per request against createOrder's;
  drain         SMS drain (QUEUED notifications, gateway at 100 ms) vs a Celery no-op drain;
  memory        peak resident memory of a web worker and of the Celery worker.

It prints a table, writes bench/results.json and stops everything it started, on Ctrl-C too.
Exit status: 0 when every target is met (or, with --smoke, whenever the harness worked), 1 when
a target is missed (full mode only), 2 when a measurement could not be made or trusted, 130 when
interrupted. See bench/README.md.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.drain import phase_drain
from bench.harness import Bench
from bench.order_to_sms import phase_order_to_sms
from bench.phases import (
    phase_confirm,
    phase_create,
    phase_documents,
    phase_memory,
    phase_my_orders,
)
from bench.procs import BenchError
from bench.report import format_table, machine_info, write_results
from bench.settings import ROOT, parse_settings
from bench.start import Services, say
from bench.targets import rows_for


def run(bench: Bench) -> None:
    """Every phase chosen (all by default), then the memory of what ran. The Celery workers
    start after createOrder: its floors' messages have no consumer either."""
    only = bench.settings.only
    bench.services.start()
    if "documents" in only:
        phase_documents(bench)
    if "create" in only:
        phase_create(bench)
    bench.measurements["worker"] = bench.services.start_workers()
    for name, phase in (
        ("order-to-sms", phase_order_to_sms),
        ("confirm", phase_confirm),
        ("my-orders", phase_my_orders),
        ("drain", phase_drain),
    ):
        if name in only:
            phase(bench)
    phase_memory(bench)


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
    settings = parse_settings(argv, __doc__)
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
            bench = Bench(settings, Services(settings, stack))
            run(bench)
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
