"""The order-to-SMS phase: how long after createOrder answers the gateway has the order's SMS.

Orders arrive at a fixed rate (bench/open_loop.py), each answer's moment kept with its order
id; the SMS gateway stamps every message it gets with its arrival (`received_at`, the same
machine's clock). The SMS names its order by the first eight hex digits of the order's id
(models.notifications.short_reference), which is how the two are matched.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections import Counter
from typing import Any

from bench import data
from bench.api import CREATE_TEMPLATE, SUCCESS, USERS
from bench.harness import Bench
from bench.load import percentile
from bench.open_loop import OpenLoopSpec, run_open_loop
from bench.start import say, step

NAME = "order-to-sms"
# "Donfiles: order 1A2B3C4D for ...", or the short form "Order 1A2B3C4D (...)".
REFERENCE = re.compile(r"\b[Oo]rder ([0-9A-F]{8})\b")
# Seconds to wait after the last answer for the last SMS: beyond this one is lost.
GRACE_SECONDS = 30.0
LATE_SEND_SECONDS = 0.05
ACCEPTED = (100, 101, 102)


def phase_order_to_sms(bench: Bench) -> None:
    """Orders at `--order-rate` a second (open loop) with the gateway at 0 ms: from each
    createOrder answer to the gateway receiving that order's SMS, p50 and p99. An unmeasured
    warm-up at the same rate first, until the gateway has all of its SMS: a fresh worker's
    first tasks are slow (its threads and their connections are made then)."""
    services, settings = bench.services, bench.settings
    user = USERS["sms"]
    bench.quiesce()  # an idle worker; the gateway at 0 ms

    def orders(seconds: float, prefix: str) -> OpenLoopSpec:
        return OpenLoopSpec(
            url=services.graphql_url,
            template=CREATE_TEMPLATE,
            marker=SUCCESS,
            rate=settings.order_rate,
            duration=seconds,
            headers=services.auth("sms"),
            prefix=f"{prefix}-{services.tag}",
        )

    if settings.warmup > 0:
        services.gateway_admin("reset", {})  # counts the warm-up's messages alone
        warm = run_open_loop(
            orders(settings.warmup, "sms-warm"), services.work_dir, f"{NAME}-warmup"
        )
        _wait_for_messages(bench, _placed(warm), time.monotonic() + GRACE_SECONDS)
    services.gateway_admin("reset", {})  # only the measured orders' messages; 0 ms
    spec = orders(settings.order_to_sms_seconds, "sms")
    with step(f"order to SMS: {spec.rate:g} orders/s for {spec.duration:g} s"):
        meter, counters = bench.cpu_meter(), data.db_counters(services.database_url)
        answers = run_open_loop(spec, services.work_dir, NAME)
        placed = _placed(answers)
        _wait_for_messages(bench, placed, time.monotonic() + GRACE_SECONDS)
        bench.record_cpu(NAME, meter, placed)
        bench.record_db(NAME, counters, placed)
    messages = services.gateway_admin("messages")["messages"]
    (services.work_dir / f"{NAME}.messages.json").write_text(json.dumps(messages))
    result = measure(answers, messages, user.phone)
    bench.measurements["order_to_sms"] = result
    _judge(bench, result)
    say(
        f"{NAME}: p50 {_ms(result['p50_ms'])}, p99 {_ms(result['p99_ms'])} over "
        f"{result['orders']} orders ({result['sms_missing']} SMS missing); createOrder p99 "
        f"{_ms(result['create_p99_ms'])} at {result['sent_per_second']:g} sent/s"
    )


def _placed(answers: dict[str, Any]) -> int:
    """How many of the requests placed an order."""
    ok = answers["fields"].index("ok")
    return sum(1 for record in answers["requests"] if record and record[ok])


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _wait_for_messages(bench: Bench, count: int, deadline: float) -> None:
    """Until the gateway has accepted `count` messages, or `deadline` (monotonic)."""
    services = bench.services
    while services.gateway_admin("stats")["accepted"] < count:
        services.check_alive(services.workers)
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


def reference(order_id: str) -> str:
    """The reference an SMS gives for an order (models.notifications.short_reference)."""
    return uuid.UUID(order_id).hex[:8].upper()


def measure(answers: dict[str, Any], messages: list[dict[str, Any]], phone: str) -> dict[str, Any]:
    """Per order due: the gateway's first receipt of its SMS minus the moment its createOrder
    answer arrived. An order never sent (the service could not keep up with the rate) or whose
    SMS never came counts as infinitely late, so a p99 is only a number when at least 99 % of
    the orders due had their SMS."""
    fields = answers["fields"]
    sent = [dict(zip(fields, r, strict=True)) if r else None for r in answers["requests"]]
    unsent = sum(record is None for record in sent)
    records = [record for record in sent if record is not None]
    placed = [record for record in records if record["ok"] and record["id"]]
    received: dict[str, float] = {}
    for message in messages:
        found = REFERENCE.search(message["message"])
        if message["to"] != phone or message["status_code"] not in ACCEPTED or not found:
            continue
        ref = found[1]
        received[ref] = min(received.get(ref, math.inf), message["received_at"])
    # Two orders of the run sharing a reference cannot be told apart: left out.
    refs = Counter(
        reference(record["id"]) for record in sent if record and record["ok"] and record["id"]
    )
    shared = {ref for ref, count in refs.items() if count > 1}
    latencies, missing = [math.inf] * unsent, 0
    for record in placed:
        ref = reference(record["id"])
        if ref in shared:
            continue
        if ref not in received:
            missing += 1
        latencies.append((received.get(ref, math.inf) - record["answered"]) * 1000)
    latencies.sort()
    create = sorted((record["answered"] - record["due"]) * 1000 for record in records)
    late = sum(record["sent"] - record["due"] > LATE_SEND_SECONDS for record in records)
    span = max(1e-6, records[-1]["sent"] - records[0]["sent"]) if len(records) > 1 else 0

    def shown(percent: float) -> float | None:
        value = percentile(latencies, percent) if latencies else math.inf
        return None if math.isinf(value) else round(value, 2)

    return {
        "rate": answers["rate"],
        "orders": len(sent),
        "unsent": unsent,
        "failed": len(records) - len(placed),
        "late_sends": late,
        "sent_per_second": round((len(records) - 1) / span, 1) if span else 0.0,
        "sms_received": len(latencies) - unsent - missing,
        "sms_missing": missing,
        "shared_references": len(shared),
        "p50_ms": shown(50),
        "p90_ms": shown(90),
        "p99_ms": shown(99),
        "max_ms": shown(100),
        "min_ms": shown(0),
        "create_p50_ms": round(percentile(create, 50), 2) if create else None,
        "create_p99_ms": round(percentile(create, 99), 2) if create else None,
    }


def _judge(bench: Bench, result: dict[str, Any]) -> None:
    """Problems (the figure cannot be trusted) and notes (worth knowing) of the phase."""
    orders = max(1, result["orders"])
    if result["unsent"]:
        bench.notes.append(
            f"{NAME}: {result['unsent']} of {orders} orders were never sent, still waiting for "
            f"a free connection {OpenLoopSpec.give_up:g} s after they were due (counted as "
            "infinitely late)"
        )
    if result["failed"] > 0.01 * orders:
        bench.problems.append(f"{NAME}: {result['failed']} of {orders} createOrders failed")
    if result["sms_missing"]:
        bench.notes.append(
            f"{NAME}: {result['sms_missing']} of {orders} orders' SMS did not reach the gateway "
            f"within {GRACE_SECONDS:.0f} s of the last answer (counted as infinitely late)"
        )
    if result["late_sends"] > 0.01 * orders:
        bench.notes.append(
            f"{NAME}: {result['late_sends']} requests sent over {LATE_SEND_SECONDS * 1000:.0f} ms "
            "after they were due (every connection busy, or the generator starved of CPU): "
            f"the arrival rate fell short of {result['rate']:g}/s"
        )
