"""The worker's and beat's entry: `celery --app worker.main worker` (or `beat`).

The Celery app is the Flask app's (`common.celery_app`), so tasks use the settings, database
session and domain functions the web process uses, read once at start.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import signals

from common.config_errors import stop_on_config_error

with stop_on_config_error():
    from common.logs import reset_context
    from common.metrics import WORKER_HEARTBEAT, serve_metrics
    from web import create_app
    from worker import tasks  # noqa: F401 - registers the tasks with this process's Celery app

    flask_app = create_app(role="worker")
settings = flask_app.config["SETTINGS"]
celery_app = flask_app.extensions["celery"]


@signals.setup_logging.connect
def _keep_our_logging(**_kwargs: Any) -> None:
    """The app logs JSON lines already (`create_app`); a receiver here keeps Celery's own
    logging set-up out."""


@signals.worker_init.connect
def _check_database_pool(sender: Any = None, **_kwargs: Any) -> None:
    """Refuse to run more task threads than the worker keeps database connections: a task
    would wait for one (up to the pool's timeout) while holding its claimed rows' leases."""
    pool = settings.db_pool_size("worker")
    threads = getattr(sender, "concurrency", None)
    if isinstance(threads, int) and threads > pool:
        print(
            f"configuration error: --concurrency={threads} is above the worker's {pool} "
            "database connections (WORKER_DB_POOL_SIZE, else WORKER_CONCURRENCY): set "
            "WORKER_CONCURRENCY, which the Procfile passes to --concurrency",
            file=sys.stderr,
        )
        raise SystemExit(1)  # Celery logs and swallows a receiver's exceptions, not this


@signals.worker_ready.connect
def _serve_metrics(**_kwargs: Any) -> None:
    """With WORKER_METRICS_PORT set, the worker serves its own /metrics (SMS attempts, gateway
    latency, sweep re-sends) for a scraper that reaches worker hosts or pods; in production
    only to the METRICS_TOKEN bearer, as the web's."""
    if settings.worker_metrics_port:
        serve_metrics(settings, settings.worker_metrics_port)


@signals.heartbeat_sent.connect
def _beat(**_kwargs: Any) -> None:
    """Celery's heartbeat went out, so this worker's consumer runs and reaches the broker: the
    "no worker consuming" alert watches the newest of these times."""
    WORKER_HEARTBEAT.set_to_current_time()


@signals.task_prerun.connect
def _forget_request_id(**_kwargs: Any) -> None:
    # Pool threads are reused: a task starts with no request id until it reads its row's.
    reset_context()
