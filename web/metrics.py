"""GET /metrics for the web process, and the GraphQL requests it counts.

The counters themselves are made in `common.metrics`; with PROMETHEUS_MULTIPROC_DIR set,
/metrics adds up every process's on the host or in the pod. What the database knows
(notifications by status, the outbox backlog) is read at scrape time, so it is right however
many processes or hosts there are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from common.metrics import (
    LATENCY,
    REQUESTS,
    SMS_ATTEMPTS,
    SWEEP_RESENDS,
    bearer_matches,
    start_at_zero,
)
from common.settings import Settings
from models.db import db
from models.notifications import AttemptOutcome, Notification, NotificationStatus

blueprint = Blueprint("metrics", __name__)

# The worker's counters at 0 in the web's /metrics too, before any worker has counted.
start_at_zero(SMS_ATTEMPTS, [outcome.value for outcome in AttemptOutcome])
start_at_zero(SWEEP_RESENDS, ["lease_expired", "overdue"])

# The `operation` label is the root field an operation selects, so the schema bounds the
# label set: a client's operation names or misspelt fields cannot grow it.
UNPARSED = "unparsed"  # no document to look at: not JSON, no query, a syntax error, too large
UNKNOWN = "unknown"  # no single operation to run, or a root field the schema does not have
SEVERAL = "several"  # more than one root field in one operation
INTROSPECTION = "introspection"  # __schema, __type, __typename


def operation_label(
    schema: GraphQLSchema, document: DocumentNode, operation_name: object = None
) -> str:
    """The `operation` label of a request: the one root field its operation selects
    (`createOrder`, `myOrders`), or one of the fixed values above."""
    operations = [
        definition
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
        and (
            operation_name is None or (definition.name and definition.name.value == operation_name)
        )
    ]
    root = schema.get_root_type(operations[0].operation) if len(operations) == 1 else None
    if root is None:
        return UNKNOWN
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    names = _root_fields(operations[0].selection_set, fragments, set())
    if len(names) != 1:
        return SEVERAL if names else UNKNOWN
    name = names.pop()
    if name.startswith("__"):
        return INTROSPECTION
    return name if name in root.fields else UNKNOWN


def _root_fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], seen: set[str]
) -> set[str]:
    names: set[str] = set()
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            names.add(selection.name.value)
        elif isinstance(selection, InlineFragmentNode):
            names |= _root_fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                seen.add(name)
                names |= _root_fields(fragments[name].selection_set, fragments, seen)
    return names


def observe_request(operation: str, outcome: str, seconds: float) -> None:
    REQUESTS.labels(operation, outcome).inc()
    LATENCY.labels(operation).observe(seconds)


# One statement: the counts by status (an index-only scan) and, from the partial index on
# QUEUED rows, when the oldest of them fell due.
_OLDEST_DUE = (
    select(func.min(Notification.next_attempt_at))
    .where(Notification.status == NotificationStatus.QUEUED)
    .scalar_subquery()
)


class OutboxCollector(Collector):
    """Notifications by status and the age of the oldest QUEUED one, read from Postgres.

    A scrape costs one statement, cut off by a statement timeout, and a process runs one at
    a time: however many scrapes arrive, each process keeps at most one connection busy."""

    STATEMENT_TIMEOUT = "2s"

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts, age = self._read()
        by_status = GaugeMetricFamily(
            "sms_notifications", "Notifications by status.", labels=["status"]
        )
        for status in NotificationStatus:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        yield by_status
        yield GaugeMetricFamily(
            "sms_outbox_backlog", "QUEUED notifications.", value=counts.get("QUEUED", 0)
        )
        yield GaugeMetricFamily(
            "sms_outbox_oldest_queued_age_seconds",
            "How long the oldest QUEUED notification has been due.",
            value=age,
        )

    def _read(self) -> tuple[dict[str, int], float]:
        with self._lock, self.app.app_context():
            try:
                db.session.execute(
                    text(f"SET LOCAL statement_timeout = '{self.STATEMENT_TIMEOUT}'")
                )
                rows = db.session.execute(
                    select(Notification.status, func.count(), _OLDEST_DUE, func.now()).group_by(
                        Notification.status
                    )
                ).all()
            finally:
                db.session.rollback()
        counts = {status: count for status, count, _, _ in rows}
        oldest, now = rows[0][2:] if rows else (None, None)
        age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
        return counts, age


def init_app(app: Flask, settings: Settings) -> None:
    """Count this app's GraphQL requests and serve them at /metrics: openly in development;
    in production only to `Authorization: Bearer <METRICS_TOKEN>`, and not at all (404, like
    any unknown path) without a METRICS_TOKEN."""
    if settings.metrics_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    app.extensions["metrics_registry"] = registry
    app.extensions["metrics_outbox"] = OutboxCollector(app)
    if not settings.is_production or settings.metrics_token:
        app.register_blueprint(blueprint)
    app.before_request(_start_timer)
    app.after_request(_record)


@blueprint.get("/metrics")
def metrics() -> Response:
    settings = current_app.config["SETTINGS"]
    if settings.is_production and not _bearer_is(settings.metrics_token):
        response = jsonify(
            {
                "errors": [
                    {
                        "message": "Send the metrics token as 'Authorization: Bearer <token>'.",
                        "extensions": {"code": "UNAUTHENTICATED"},
                    }
                ]
            }
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry()
    body = generate_latest(current_app.extensions["metrics_registry"])
    registry.register(current_app.extensions["metrics_outbox"])
    body += generate_latest(registry)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _bearer_is(token: str) -> bool:
    return bearer_matches(request.headers.get("Authorization"), token)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _record(response: Response) -> Response:
    # A CORS preflight and GraphiQL's page are not GraphQL requests.
    graphql = request.method != "OPTIONS" and not g.get("graphiql_page")
    if request.endpoint == "graphql.execute" and graphql and "metrics_started" in g:
        outcome = g.get("graphql_outcome") or (
            "unauthenticated"
            if response.status_code == 401
            else "bad_request"
            if response.status_code < 500
            else "error"
        )
        observe_request(
            g.get("graphql_root_field", UNPARSED), outcome, time.perf_counter() - g.metrics_started
        )
    return response
