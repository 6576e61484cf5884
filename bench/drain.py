"""The drain phase: QUEUED notifications sent by the service's worker, against Celery's own
ceiling, a worker draining as many no-op tasks on the same app, pool and concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import data
from bench.api import USERS
from bench.harness import Bench
from bench.procs import BenchError, Managed
from bench.settings import ROOT
from bench.start import say, step

NOOP_TASK = "bench.noop"  # bench.noop_tasks.NOOP_TASK; not imported: it loads the service


def phase_drain(bench: Bench) -> None:
    """(d) SMS drain against a no-op drain, on the same Celery app, pool and concurrency."""
    services = bench.services
    count = bench.settings.drain_count
    user = USERS["drain"]
    bench.quiesce()  # before the rows exist: they are published below, not by the sweep
    with data.connect(services.database_url) as connection:
        data.bulk_orders(
            connection,
            customer_id=user.customer_id,
            subject=user.sub,
            count=count,
            return_ids=False,
        )
        ids = data.queued_notifications(connection, customer_id=user.customer_id)
    ids_file = services.work_dir / "drain-ids.txt"
    ids_file.write_text("\n".join(map(str, ids)) + "\n")
    services.gateway_admin("reset", {})
    services.set_gateway_latency(0.1)
    with step(f"(d) SMS drain of {count:,} at gateway 100 ms"):
        sms = _drain(
            bench,
            "drain-sms",
            _publisher(bench, services.sms_queue, "--relay", "--ids-file", str(ids_file)),
            count,
            lambda deadline: _wait_sms_sent(bench, count, deadline),
            services.workers,
        )
    gateway = services.gateway_admin("stats")
    services.set_gateway_latency(0)
    with data.connect(services.database_url) as connection:
        progress = data.drain_progress(connection, customer_id=user.customer_id)
    if progress["sent"] != count:
        bench.problems.append(f"SMS drain: {progress['sent']} of {count} SENT ({progress})")
    sms |= {
        "sent": progress["sent"],
        "failed": progress["failed"],
        "gateway_max_in_flight": gateway.get("max_in_flight"),
        "gateway_requests": gateway.get("requests"),
    }
    with step(f"(d) no-op drain of {count:,}"):
        noop = _drain(
            bench,
            "drain-noop",
            _publisher(bench, services.noop_queue, "--task", NOOP_TASK, "--count", str(count)),
            count,
            lambda deadline: _wait_broker_empty(bench, services.noop_queue, deadline),
            services.noop_workers,
        )
    bench.measurements["drain"] = {"count": count, "sms": sms, "noop": noop}
    if bench.settings.profile:
        _profile_drain(bench)
    say(f"drain: {sms['per_second']:,.0f} SMS/s, {noop['per_second']:,.0f} no-op tasks/s")


def _profile_drain(bench: Bench) -> None:
    """py-spy (GIL view) on the Celery worker while it sends more SMS at 100 ms (not a
    measurement): a second notification for up to 2,000 of the drain customer's orders."""
    from bench import profile

    services = bench.services
    user = USERS["drain"]
    bench.quiesce()
    with data.connect(services.database_url) as connection:
        ids = data.queued_notifications(
            connection, customer_id=user.customer_id, kind="ORDER_CONFIRMED", limit=2000
        )
    ids_file = services.work_dir / "drain-profile-ids.txt"
    ids_file.write_text("\n".join(map(str, ids)) + "\n")
    services.set_gateway_latency(0.1)
    raw = services.work_dir / "profile-drain-gil.txt"
    seconds = bench.settings.duration
    with step(f"profiling the SMS drain: {seconds:.0f} s of py-spy on the worker"):
        recorder = profile.record(services.worker.pid, seconds, raw, gil=True)
        time.sleep(0.5)
        subprocess.run(
            _publisher(bench, services.sms_queue, "--relay", "--ids-file", str(ids_file)),
            cwd=ROOT,
            env=services.dev_env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        recorder.wait(timeout=60)
    bench.quiesce()
    if raw.exists():
        summary = profile.summarise(raw)
        raw.with_name(f"{raw.stem}-summary.txt").write_text(summary.text() + "\n")
        bench.measurements.setdefault("profile_drain", {})["gil"] = {
            "raw": str(raw),
            **summary.as_dict(),
        }
        say(f"profile: {raw} (summary beside it)")


def _publisher(bench: Bench, queue: str, *how: str) -> list[str]:
    """The command of a bench.publish process sending tasks to `queue` (`how`: its
    `--task ...` or `--relay ...` arguments)."""
    return [
        *(sys.executable, "-m", "bench.publish", "--broker", bench.services.redis_url),
        *("--queue", queue, *how),
    ]


def _wait_sms_sent(bench: Bench, count: int, deadline: float) -> float | None:
    """Wait until every SMS of the drain customer is SENT (or FAILED); return the moment
    of the last sent_at (epoch), or None at `deadline`.

    Cheap on the system under test: the gateway's in-memory counter is polled until it
    saw `count` requests, and only then the database, whose sent_at gives the exact end."""
    services = bench.services
    while services.gateway_admin("stats")["requests"] < count:
        services.check_alive(services.workers)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    customer = USERS["drain"].customer_id
    with data.connect(services.database_url) as connection:
        while time.monotonic() < deadline:
            progress = data.drain_progress(connection, customer_id=customer)
            if progress["pending"] == 0 and progress["sent"] + progress["failed"] >= count:
                return progress["last_sent_at"] or time.time()
            time.sleep(0.02)
    return None


def _wait_broker_empty(bench: Bench, queue: str, deadline: float) -> float | None:
    """Wait until `queue` holds no message and none is delivered but unacknowledged (the
    worker acknowledges after running a task); return that moment (epoch), polled every
    20 ms, or None at `deadline`."""
    while time.monotonic() < deadline:
        bench.services.check_alive(bench.services.noop_workers)
        if bench.broker_empty(queue):
            return time.time()
        time.sleep(0.02)
    return None


def _drain(
    bench: Bench,
    name: str,
    publish_command: list[str],
    count: int,
    wait: Callable[[float], float | None],
    workers: list[Managed],
) -> dict[str, Any]:
    """Publish `count` tasks from a helper process; the time from its first publish until
    `wait` (given a deadline) says the last one is done."""
    services = bench.services
    meter, counters = bench.cpu_meter(), data.db_counters(services.database_url)
    publisher = subprocess.Popen(
        publish_command, cwd=ROOT, env=services.dev_env, stdout=subprocess.PIPE, text=True
    )
    while publisher.poll() is None:  # before it finishes, the queue may be empty
        services.check_alive(workers)
        time.sleep(0.02)
    stdout, _ = publisher.communicate(timeout=30)
    if publisher.returncode != 0:
        raise BenchError(f"bench.publish failed with status {publisher.returncode}")
    finished_at = wait(time.monotonic() + 60 + count / 10)
    bench.record_cpu(name, meter, count)
    bench.record_db(name, counters, count)
    published = json.loads(stdout.strip().splitlines()[-1])
    if finished_at is None:
        bench.problems.append(f"{name}: not drained in time")
        finished_at = time.time()
    seconds = finished_at - published["started"]
    return {
        "published_from": published["started"],
        "publish_seconds": round(published["finished"] - published["started"], 3),
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
    }
