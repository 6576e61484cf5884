"""The request phases of a run: hostile documents, createOrder beside its floors, confirmOrder
at two gateway latencies, myOrders for a small and a large customer; and peak memory."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from bench import data, documents
from bench.api import (
    CONFIRM_TEMPLATE,
    CREATE_TEMPLATE,
    MY_ORDERS_BODY,
    MY_ORDERS_MARKER,
    SUCCESS,
    USERS,
)
from bench.harness import Bench
from bench.load import run_load
from bench.procs import children, memory_kb
from bench.start import say, step


def phase_documents(bench: Bench) -> None:
    """(f) The hostile documents of bench/documents.py, sent one at a time while nothing
    else runs (without a token, or as an admin who sees a page of orders of other
    customers): how long the worst takes to be answered."""
    services = bench.services
    sends = 3 if bench.settings.smoke else 15
    headers = {"Content-Type": "application/json"}
    signed_in = {**headers, **services.auth("admin")}
    with data.connect(services.database_url) as connection:
        data.customers_with_an_order(connection, count=documents.ORDERS_OF_OTHERS)

    def post(body: str, as_admin: bool) -> tuple[int, float, int]:
        started = time.perf_counter()
        status, answer = services.post(
            services.web_port, "/graphql", body, signed_in if as_admin else headers
        )
        took = time.perf_counter() - started
        return status, took, len(json.dumps(answer, ensure_ascii=False).encode())

    with step(f"(f) {len(documents.HOSTILE)} hostile documents, {sends} times each"):
        results = documents.time_hostile(post, sends)
    broken = {
        name: found["statuses"]
        for name, found in results["documents"].items()
        if any(status >= 500 for status in found["statuses"])
    }
    if broken:
        bench.problems.append(f"hostile documents answered 5xx: {broken}")
    bench.measurements["documents"] = results


def phase_create(bench: Bench) -> None:
    """(a) createOrder against the floor and the stack floor, same body, same load. The
    Celery workers are not started yet: the floors' LPUSHed messages have no consumer
    either, so all three measure the request path alone (the service's publish to Redis
    included)."""
    services, warmup = bench.services, bench.settings.warmup

    def measure(name: str, url: str, prefix: str, headers: dict[str, str]) -> dict[str, Any]:
        spec = bench.spec(url, CREATE_TEMPLATE, SUCCESS, headers=headers, prefix=prefix)
        warm = bench.spec(
            url, CREATE_TEMPLATE, SUCCESS, headers=headers, prefix=f"{prefix}-warm", duration=warmup
        )
        return asdict(bench.load(name, spec, warm=warm))

    with step("(a) createOrder vs floor and stack floor"):
        floor = measure(
            "create-floor", f"http://127.0.0.1:{services.floor_port}/graphql", "floor", {}
        )
        stack = measure(
            "create-stack-floor",
            f"http://127.0.0.1:{services.stack_floor_port}/graphql",
            "stack",
            {},
        )
        service = measure("create-service", services.graphql_url, "svc", services.auth("create"))
    with data.connect(services.database_url) as connection:
        floor_rows = data.floor_rows(connection, "floor")
        stack_floor_rows = data.floor_rows(connection, "stack")
    bench.measurements["create"] = {
        "service": service,
        "floor": floor,
        "stack_floor": stack,
        # The floors' requests' idempotency keys start with their loads' prefixes.
        "floor_rows": floor_rows,
        "stack_floor_rows": stack_floor_rows,
        "floor_messages": services.redis.llen(services.floor_list),
        "stack_floor_messages": services.redis.llen(services.stack_floor_list),
    }
    if bench.settings.profile:
        _profile_create(bench)
    _discard_backlog(bench)


def _profile_create(bench: Bench) -> None:
    """py-spy on the web workers during two more createOrder loads (not measurements):
    `gil` samples only the thread holding the GIL (where Python CPU time goes, which bounds
    a gthread worker), `active` every thread not sleeping (waits on sockets included)."""
    from bench import profile

    services, seconds = bench.services, bench.settings.duration
    summaries = {}
    for view in ("gil", "active"):
        raw = services.work_dir / f"profile-create-{view}.txt"
        with step(f"profiling createOrder: {seconds:.0f} s of py-spy ({view} view)"):
            recorder = profile.record(services.web.pid, seconds + 1, raw, gil=view == "gil")
            time.sleep(0.5)  # py-spy attaches
            spec = bench.spec(
                services.graphql_url,
                CREATE_TEMPLATE,
                SUCCESS,
                headers=services.auth("create"),
                prefix=f"svc-profile-{view}",
            )
            run_load(spec, bench.settings.loadgen, services.work_dir, f"create-profiled-{view}")
            recorder.wait(timeout=60)
        if not raw.exists():
            bench.problems.append(f"py-spy wrote no profile; see {raw.with_suffix('.log')}")
            continue
        summary = profile.summarise(raw)
        raw.with_name(f"{raw.stem}-summary.txt").write_text(summary.text() + "\n")
        summaries[view] = {"raw": str(raw), **summary.as_dict()}
        say(f"profile: {raw} (summary beside it)")
    bench.measurements["profile_create"] = summaries


def _discard_backlog(bench: Bench) -> None:
    """The SMS of phase (a) would keep the worker busy for minutes: once the web's relay
    has published them, drop the tasks and mark the rows FAILED (no measurement uses them)."""
    services = bench.services
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        length = services.redis.llen(services.sms_queue)
        if length != last:
            last, stable_since = length, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            break
        time.sleep(0.1)
    services.redis.delete(services.sms_queue)
    with data.connect(services.database_url) as connection:
        discarded = data.discard_pending(connection, "bench: createOrder backlog, not sent")
    bench.measurements["create"]["sms_tasks_published"] = last
    say(f"discarded the {discarded} SMS of the createOrder phase")


def phase_confirm(bench: Bench) -> None:
    """(b) confirmOrder p99 with the gateway at 0 ms and at 200 ms: a request never waits
    for an SMS, so the gateway's latency should not show in it."""
    services, settings = bench.services, bench.settings
    user = USERS["confirm"]
    warm_count, measure_count = settings.confirm_orders
    with data.connect(services.database_url) as connection:
        ids = data.bulk_orders(
            connection,
            customer_id=user.customer_id,
            subject=user.sub,
            count=2 * (warm_count + measure_count),
        )
    values = [str(order_id) for order_id in ids]
    results: dict[str, Any] = {}
    with step("(b) confirmOrder at gateway 0 ms and 200 ms"):
        for index, latency in enumerate((0.0, 0.2)):
            bench.quiesce()
            services.set_gateway_latency(latency)
            chunk = values[index * (warm_count + measure_count) :]
            common = {
                "headers": services.auth("confirm"),
                "connections": settings.latency_connections,
            }
            warm = bench.spec(
                services.graphql_url,
                CONFIRM_TEMPLATE,
                SUCCESS,
                values=chunk[:warm_count],
                duration=settings.warmup,
                **common,
            )
            spec = bench.spec(
                services.graphql_url,
                CONFIRM_TEMPLATE,
                SUCCESS,
                values=chunk[warm_count : warm_count + measure_count],
                **common,
            )
            label = f"gateway_{int(latency * 1000)}ms"
            name = f"confirm-gateway-{int(latency * 1000)}ms"
            results[label] = asdict(bench.load(name, spec, warm=warm))
        bench.quiesce()
    bench.measurements["confirm"] = results


def phase_my_orders(bench: Bench) -> None:
    """(c) myOrders(first: 20) for a customer with few orders and one with very many."""
    services, settings = bench.services, bench.settings
    sizes = {"small": settings.small_orders, "large": settings.large_orders}
    loading = step(f"(c) bulk-loading {sizes['small']:,} + {sizes['large']:,} orders")
    with loading, data.connect(services.database_url) as connection:
        for role, count in sizes.items():
            user = USERS[role]
            data.bulk_orders(
                connection,
                customer_id=user.customer_id,
                subject=user.sub,
                count=count,
                return_ids=False,
            )
        data.settle(connection, "orders")
    results: dict[str, Any] = {}
    with step("(c) myOrders(first: 20)"):
        for role, count in sizes.items():
            common = {"headers": services.auth(role), "connections": settings.latency_connections}
            warm = bench.spec(
                services.graphql_url,
                MY_ORDERS_BODY,
                MY_ORDERS_MARKER,
                duration=settings.warmup,
                **common,
            )
            spec = bench.spec(services.graphql_url, MY_ORDERS_BODY, MY_ORDERS_MARKER, **common)
            results[role] = {
                "orders": count,
                **asdict(bench.load(f"my-orders-{count}", spec, warm=warm)),
            }
    bench.measurements["my_orders"] = results


def phase_memory(bench: Bench) -> None:
    """(e) Peak resident memory (VmHWM) of web workers and the Celery worker, after all
    of the load above."""
    services = bench.services
    web = {pid: memory_kb(pid) for pid in children(services.web.pid)}
    worker_pids = [services.worker.pid, *children(services.worker.pid)]
    celery = {pid: memory_kb(pid) for pid in worker_pids}
    bench.measurements["memory"] = {
        "web_master": memory_kb(services.web.pid),
        "web_workers": web,
        "celery_worker": celery,
        "web_worker_peak_mb": max((m["VmHWM"] for m in web.values()), default=0) / 1024,
        "celery_worker_peak_mb": max(m["VmHWM"] for m in celery.values()) / 1024,
    }
