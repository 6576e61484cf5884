"""Prometheus metrics at GET /metrics.

Counters and histograms live in each process; with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py
and `make run` set it, the Kubernetes ConfigMap too) every gunicorn worker and Celery worker on
the host or in the pod writes there, making it when it is missing, and /metrics adds them up.
What the database knows (notifications by status, the outbox backlog) is read at scrape time,
so it is right however many processes or hosts there are.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

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
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from werkzeug.datastructures import Authorization

from models.db import db
from models.notifications import AttemptOutcome, Notification, NotificationStatus
from web.config import ConfigError, Settings

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> str | None:
    """Create PROMETHEUS_MULTIPROC_DIR when it is set and missing (an empty `emptyDir`, a fresh
    /tmp), and return it. Raise `ConfigError` naming the variable when this process cannot
    create or write it."""
    # prometheus_client reads the variable from the process environment itself (never from
    # .env) and opens a file there for each metric it makes: so this reads it the same way.
    path = os.environ.get(MULTIPROCESS_DIR)
    if path is None:
        return None
    if not path:
        raise ConfigError(
            f"{MULTIPROCESS_DIR} is set but empty, so the metrics would be written into the "
            "working directory: unset it or name a writable directory"
        )
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{MULTIPROCESS_DIR}={path!r} cannot be created ({error.strerror}): name a "
            "directory this process may write, e.g. one under /tmp"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{MULTIPROCESS_DIR}={path!r} is not writable by this process: name a directory it "
            "may write, e.g. one under /tmp"
        )
    return path


# Before the metrics below: each opens its file in that directory as it is made. The web,
# the worker, beat, Flower and the migrations all import this module, so each process makes
# the directory it needs whoever else runs on the host or in the pod.
prepare_multiprocess_dir()

blueprint = Blueprint("metrics", __name__)

REQUESTS = Counter(
    "graphql_requests_total",
    "GraphQL requests by the root field they select (operation) and outcome.",
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
SMS_IN_DOUBT = Counter(
    "sms_in_doubt_total",
    "Sends that reached the gateway with no reply to tell (the worker stopped before it came, "
    "or it did not come within SMS_TIMEOUT): the SMS may have gone out, and is sent again "
    "(notifications(inDoubt: true) lists them).",
)
RELAY_DROPPED = Counter(
    "sms_relay_dropped_total",
    "Notification ids the outbox relay of a web process did not publish, left QUEUED for the "
    "sweep: broker_down (Redis unreachable), backlog_full (more waiting than it holds) or "
    "relay_error (those it held when an unexpected error stopped it).",
    ["reason"],
)
RELAY_RESTARTS = Counter(
    "sms_relay_restarts_total",
    "Times the outbox relay stopped on an unexpected error and was started again.",
)
WORKER_HEARTBEAT = Gauge(
    "sms_worker_heartbeat_timestamp_seconds",
    "When this Celery worker last sent its heartbeat (every 2 s while its consumer reaches the "
    "broker); 0 in a process that is no worker.",
    # Read over a shared directory: the newest heartbeat of the host's workers; a dead
    # worker's last one stays behind, so its age keeps growing.
    multiprocess_mode="max",
)

# Every known label value from the start, at 0: a series that first appears with its first
# count (a first refused send, say) gives increase() nothing to compare it with.
for _outcome in AttemptOutcome:
    SMS_ATTEMPTS.labels(_outcome.value)
for _reason in ("lease_expired", "overdue"):
    SWEEP_RESENDS.labels(_reason)

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


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header value is `Bearer <token>`."""
    given = Authorization.from_header(header)
    if given is None or given.type != "bearer" or not given.token:
        return False
    # Constant time: how long a wrong guess takes says nothing about the right one.
    return hmac.compare_digest(given.token.encode(), token.encode())


def serve_worker_metrics(
    settings: Settings,
    port: int,
    host: str = "0.0.0.0",  # noqa: S104 - every interface, as prometheus_client's server
) -> WSGIServer | None:
    """Serve this process's counters on `port` in a thread (the worker's WORKER_METRICS_PORT),
    under the web's rule: in production only to the METRICS_TOKEN bearer, and off without a
    token (None then)."""
    if settings.is_production and not settings.metrics_token:
        return None
    exposition = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if settings.is_production and not bearer_matches(
            environ.get("HTTP_AUTHORIZATION"), settings.metrics_token or ""
        ):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"Send the metrics token as 'Authorization: Bearer <token>'.\n"]
        return exposition(environ, start_response)

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass  # a line per scrape would drown the worker's own


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
