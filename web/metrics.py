"""Prometheus metrics at GET /metrics.

Counters and histograms live in each process; with PROMETHEUS_MULTIPROC_DIR set (the Procfile
and compose set it) every gunicorn worker and Celery worker on the host writes there and
/metrics adds them up. What the database knows (notifications by status, the outbox backlog)
is read at scrape time, so it is right however many processes or hosts there are.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from models.db import db
from models.notifications import Notification, NotificationStatus

blueprint = Blueprint("metrics", __name__)

REQUESTS = Counter(
    "graphql_requests_total",
    "GraphQL requests by operation name and outcome.",
    ["operation", "outcome"],
)
LATENCY = Histogram(
    "graphql_request_duration_seconds",
    "Time to answer a GraphQL request.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SMS_ATTEMPTS = Counter("sms_attempts_total", "Tries at the SMS gateway by outcome.", ["outcome"])
GATEWAY_LATENCY = Histogram(
    "sms_gateway_duration_seconds",
    "Time the SMS gateway took to answer.",
    buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
)
SWEEP_RESENDS = Counter(
    "sms_sweep_resends_total",
    "Notifications the sweep sent again: lease_expired (a worker died mid-send, so the SMS "
    "may go out twice) or overdue (its task was lost or never published).",
    ["reason"],
)

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_OPERATION_NAMES = 200  # clients choose the names; the label set must stay bounded
_seen: set[str] = set()
_seen_lock = threading.Lock()


def operation_label(name: str | None) -> str:
    """A bounded label for a client-chosen operation name."""
    if not name or not NAME.match(name):
        return "anonymous"
    with _seen_lock:
        if name in _seen or len(_seen) < MAX_OPERATION_NAMES:
            _seen.add(name)
            return name
    return "other"


def observe_request(operation: str | None, outcome: str, seconds: float) -> None:
    label = operation_label(operation)
    REQUESTS.labels(label, outcome).inc()
    LATENCY.labels(label).observe(seconds)


class OutboxCollector(Collector):
    """Notifications by status and the age of the oldest QUEUED one, read from Postgres."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.app.app_context():
            try:
                counts = dict(
                    db.session.execute(
                        select(Notification.status, func.count()).group_by(Notification.status)
                    ).all()
                )
                oldest = db.session.scalar(
                    select(func.min(Notification.next_attempt_at)).where(
                        Notification.status == NotificationStatus.QUEUED
                    )
                )
                now = db.session.scalar(select(func.now()))
            finally:
                db.session.rollback()
        by_status = GaugeMetricFamily(
            "sms_notifications", "Notifications by status.", labels=["status"]
        )
        for status in NotificationStatus:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        yield by_status
        yield GaugeMetricFamily(
            "sms_outbox_backlog", "QUEUED notifications.", value=counts.get("QUEUED", 0)
        )
        age = max(0.0, (now - oldest).total_seconds()) if oldest and now else 0.0
        yield GaugeMetricFamily(
            "sms_outbox_oldest_queued_age_seconds",
            "How long the oldest QUEUED notification has been due.",
            value=age,
        )


def init_app(app: Flask, multiprocess_dir: str | None) -> None:
    """Serve /metrics for this app and count its GraphQL requests."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    app.extensions["metrics_registry"] = registry
    app.extensions["metrics_outbox"] = OutboxCollector(app)
    app.register_blueprint(blueprint)
    app.before_request(_start_timer)
    app.after_request(_record)


@blueprint.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry()
    body = generate_latest(current_app.extensions["metrics_registry"])
    registry.register(current_app.extensions["metrics_outbox"])
    body += generate_latest(registry)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _record(response: Response) -> Response:
    if request.endpoint == "graphql.execute" and "metrics_started" in g:
        outcome = g.get("graphql_outcome") or (
            "unauthenticated"
            if response.status_code == 401
            else "bad_request"
            if response.status_code < 500
            else "error"
        )
        observe_request(
            g.get("graphql_operation"), outcome, time.perf_counter() - g.metrics_started
        )
    return response
