"""The service's Prometheus metrics, made once per process for the web, the worker, beat and
Flower alike.

Counters and histograms live in each process; with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py
and `make run` set it, the Kubernetes ConfigMap too) every gunicorn worker and Celery worker on
the host or in the pod writes there, making it when it is missing, and the web's /metrics adds
them up (`web.metrics`).
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from werkzeug.datastructures import Authorization

from common.settings import ConfigError, Settings

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


# Before the metrics below: each opens its file in that directory as it is made. Every
# process imports this module, so each makes the directory it needs whoever else runs beside.
prepare_multiprocess_dir()

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


def start_at_zero(counter: Counter, values: Iterable[str]) -> None:
    """Show each known label value from the start, at 0: a series that first appears with its
    first count (a first refused send, say) gives increase() nothing to compare it with."""
    for value in values:
        counter.labels(value)


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header value is `Bearer <token>`."""
    given = Authorization.from_header(header)
    if given is None or given.type != "bearer" or not given.token:
        return False
    # Constant time: how long a wrong guess takes says nothing about the right one.
    return hmac.compare_digest(given.token.encode(), token.encode())


def serve_metrics(
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
