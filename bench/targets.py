"""The table of a run: each figure, and issue 18's targets as ratios from this one run.

bench/README.md says what each row measures, how, and why its target is what it is.
"""

from __future__ import annotations

from typing import Any

from bench.report import Row, check, ratio
from bench.settings import Settings

# The targets (issue 18, "Performance, restated"; memory and hostile documents as before).
CREATE_VS_STACK_FLOOR_RPS = 0.8
CREATE_VS_STACK_FLOOR_P99 = 1.5
MY_ORDERS_VS_CREATE_CPU = 1.0
ORDER_TO_SMS_P99_MS = 250
CONFIRM_SLOW_VS_FAST_P99 = 1.2
SMS_VS_NOOP_DRAIN = 0.9
HOSTILE_MEDIAN_MS = 50
WEB_WORKER_PEAK_MB = 150
CELERY_WORKER_PEAK_MB = 200


def rows_for(measurements: dict[str, Any], settings: Settings) -> list[Row]:
    """The rows of every phase that ran; a row from two phases only if both ran."""
    groups: list[tuple[set[str], list[Row]]] = [
        ({"documents"}, _documents(measurements)),
        ({"create"}, _create(measurements)),
        ({"order-to-sms"}, _order_to_sms(measurements, settings)),
        ({"confirm"}, _confirm(measurements)),
        ({"my-orders"}, _my_orders(measurements, settings)),
        ({"create", "my-orders"}, _my_orders_cpu(measurements, settings)),
        ({"drain"}, _drain(measurements)),
        (set(), _memory(measurements)),
    ]
    return [row for needed, rows in groups if needed <= set(settings.only) for row in rows]


def _web_cpu(measurements: dict[str, Any], name: str) -> float | None:
    """Milliseconds of the web process's CPU per request of measurement `name`."""
    return measurements.get("cpu_ms_per_operation", {}).get(name, {}).get("web")


def _create(measurements: dict[str, Any]) -> list[Row]:
    create = measurements.get("create", {})
    service, floor = create.get("service", {}), create.get("floor", {})
    stack = create.get("stack_floor", {})
    return [
        Row("createOrder throughput", service.get("rps"), "req/s"),
        Row("createOrder p50", service.get("p50_ms"), "ms"),
        Row("createOrder p99", service.get("p99_ms"), "ms"),
        Row("createOrder web CPU", _web_cpu(measurements, "create-service"), "ms/req"),
        Row("stack floor throughput", stack.get("rps"), "req/s"),
        Row("stack floor p50", stack.get("p50_ms"), "ms"),
        Row("stack floor p99", stack.get("p99_ms"), "ms"),
        check(
            "createOrder/stack floor throughput",
            ratio(service.get("rps"), stack.get("rps")),
            "x",
            ">=",
            CREATE_VS_STACK_FLOOR_RPS,
        ),
        check(
            "createOrder/stack floor p99",
            ratio(service.get("p99_ms"), stack.get("p99_ms")),
            "x",
            "<=",
            CREATE_VS_STACK_FLOOR_P99,
        ),
        # For reference, no target: the bare work without the stack the brief fixes.
        Row("floor throughput", floor.get("rps"), "req/s"),
        Row("floor p50", floor.get("p50_ms"), "ms"),
        Row("floor p99", floor.get("p99_ms"), "ms"),
        Row("stack floor/floor throughput", ratio(stack.get("rps"), floor.get("rps")), "x"),
        Row("createOrder/floor throughput", ratio(service.get("rps"), floor.get("rps")), "x"),
    ]


def _order_to_sms(measurements: dict[str, Any], settings: Settings) -> list[Row]:
    found = measurements.get("order_to_sms", {})
    rate = f"{settings.order_rate:g} orders/s"
    return [
        Row(f"order to SMS p50, {rate}", found.get("p50_ms"), "ms"),
        check(f"order to SMS p99, {rate}", found.get("p99_ms"), "ms", "<=", ORDER_TO_SMS_P99_MS),
        Row(f"createOrder p99 at {rate}", found.get("create_p99_ms"), "ms"),
        # Short of the rate asked for when the service (or the machine) cannot keep up.
        Row("order to SMS, orders sent", found.get("sent_per_second"), "/s"),
    ]


def _confirm(measurements: dict[str, Any]) -> list[Row]:
    confirm = measurements.get("confirm", {})
    fast = confirm.get("gateway_0ms", {}).get("p99_ms")
    slow = confirm.get("gateway_200ms", {}).get("p99_ms")
    return [
        Row("confirmOrder p99, gateway 0 ms", fast, "ms"),
        Row("confirmOrder p99, gateway 200 ms", slow, "ms"),
        check(
            "confirmOrder p99 200 ms/0 ms", ratio(slow, fast), "x", "<=", CONFIRM_SLOW_VS_FAST_P99
        ),
    ]


def _my_orders(measurements: dict[str, Any], settings: Settings) -> list[Row]:
    my_orders = measurements.get("my_orders", {})
    small, large = my_orders.get("small", {}), my_orders.get("large", {})
    return [
        Row(f"myOrders p50, {settings.small_orders:,} orders", small.get("p50_ms"), "ms"),
        Row(f"myOrders p50, {settings.large_orders:,} orders", large.get("p50_ms"), "ms"),
        Row(
            f"myOrders p50 {_short(settings.large_orders)}/{_short(settings.small_orders)}",
            ratio(large.get("p50_ms"), small.get("p50_ms")),
            "x",
        ),
    ]


def _my_orders_cpu(measurements: dict[str, Any], settings: Settings) -> list[Row]:
    create = _web_cpu(measurements, "create-service")
    rows = []
    for count in (settings.small_orders, settings.large_orders):
        cpu = _web_cpu(measurements, f"my-orders-{count}")
        rows += [
            Row(f"myOrders web CPU, {count:,} orders", cpu, "ms/req"),
            check(
                f"myOrders/createOrder web CPU, {_short(count)}",
                ratio(cpu, create),
                "x",
                "<=",
                MY_ORDERS_VS_CREATE_CPU,
            ),
        ]
    return rows


def _drain(measurements: dict[str, Any]) -> list[Row]:
    drain = measurements.get("drain", {})
    sms = drain.get("sms", {}).get("per_second")
    noop = drain.get("noop", {}).get("per_second")
    return [
        Row("SMS drain, gateway 100 ms", sms, "SMS/s"),
        Row("Celery no-op drain", noop, "tasks/s"),
        check("SMS drain/no-op drain", ratio(sms, noop), "x", ">=", SMS_VS_NOOP_DRAIN),
    ]


def _documents(measurements: dict[str, Any]) -> list[Row]:
    hostile = measurements.get("documents", {})
    return [
        check(
            f"hostile document, slowest median ({hostile.get('worst', '-')})",
            hostile.get("worst_median_ms"),
            "ms",
            "<=",
            HOSTILE_MEDIAN_MS,
        )
    ]


def _memory(measurements: dict[str, Any]) -> list[Row]:
    memory = measurements.get("memory", {})
    return [
        check(
            "web worker peak RSS", memory.get("web_worker_peak_mb"), "MB", "<", WEB_WORKER_PEAK_MB
        ),
        check(
            "Celery worker peak RSS",
            memory.get("celery_worker_peak_mb"),
            "MB",
            "<",
            CELERY_WORKER_PEAK_MB,
        ),
    ]


def _short(count: int) -> str:
    """An order count as a row's name gives it: 10k, 1M."""
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1_000 and count % 1_000 == 0:
        return f"{count // 1_000}k"
    return str(count)
