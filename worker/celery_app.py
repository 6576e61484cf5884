"""The Celery app. Tasks run inside the Flask app context from `web.create_app`, so they use
the same settings, database session and domain functions as the web process."""

from __future__ import annotations

import sys
import threading
from typing import Any

from celery import Celery, Task, signals
from flask import Flask

_flask_app: Flask | None = None
_lock = threading.Lock()


def flask_app() -> Flask:
    """This process's Flask app, created on first use (after a fork, never before)."""
    global _flask_app
    if _flask_app is None:
        with _lock:
            if _flask_app is None:
                from web import create_app

                _flask_app = create_app(role="worker")
    return _flask_app


def bind_flask_app(app: Flask) -> None:
    """Use `app` for tasks run in this process (the web process passes its own)."""
    global _flask_app
    _flask_app = app


class AppContextTask(Task):
    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with flask_app().app_context():
            return super().__call__(*args, **kwargs)


@signals.setup_logging.connect
def _json_logs(**_kwargs: Any) -> None:
    """The worker and beat log JSON lines like the web process."""
    from web.config import Settings, warn_once
    from web.logs import configure

    settings = Settings.from_env()
    configure(settings.log_level)
    warn_once(settings)


@signals.worker_process_init.connect
@signals.celeryd_init.connect
@signals.beat_init.connect
def _sentry(**_kwargs: Any) -> None:
    from web import sentry
    from web.config import Settings

    sentry.init(Settings.from_env())


@signals.worker_init.connect
def _check_database_pool(sender: Any = None, **_kwargs: Any) -> None:
    """Refuse to run more task threads than the worker keeps database connections: a task
    would wait for one (up to the pool's timeout) while holding its claimed rows' leases."""
    from web.config import Settings

    pool = Settings.from_env().db_pool_size("worker")
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
    from web.config import Settings
    from web.metrics import serve_worker_metrics

    settings = Settings.from_env()
    if settings.worker_metrics_port:
        serve_worker_metrics(settings, settings.worker_metrics_port)


@signals.heartbeat_sent.connect
def _beat(**_kwargs: Any) -> None:
    """Celery's heartbeat went out, so this worker's consumer runs and reaches the broker: the
    "no worker consuming" alert watches the newest of these times."""
    from web.metrics import WORKER_HEARTBEAT

    WORKER_HEARTBEAT.set_to_current_time()


@signals.task_prerun.connect
def _forget_request_id(**_kwargs: Any) -> None:
    # Pool threads are reused: a task starts with no request id until it reads its row's.
    from web.logs import request_id_var

    request_id_var.set(None)


celery_app = Celery("orders", task_cls=AppContextTask)
celery_app.config_from_object("celeryconfig")
celery_app.conf.include = ["worker.tasks"]
