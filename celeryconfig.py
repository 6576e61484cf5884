"""Celery's settings for the worker, beat, Flower and the web process that publishes tasks.

`config(settings)` gives them from settings already read (`common.settings`), so each process
reads its environment once; `common.celery_app` applies them to the Flask app's Celery app.
"""

from __future__ import annotations

from typing import Any

# Retries wait at most SMS_BACKOFF_CAP seconds and a task runs at most TASK_TIME_LIMIT
# seconds; Redis redelivers an unacknowledged task after VISIBILITY_TIMEOUT, so it must be
# longer than both together or a waiting retry would run twice (the settings refuse a cap
# that breaks this). The thread pool of the Procfile does not enforce the time limits; there
# the sender's timeouts bound a send.
TASK_SOFT_TIME_LIMIT = 40
TASK_TIME_LIMIT = 45
VISIBILITY_TIMEOUT = 3600

# A sweep no worker took within its period is dropped: the next one does the same work, and
# sweeps piled up while no worker ran would each publish the whole backlog again.
SWEEP_EVERY = 30.0


def config(settings: Any) -> dict[str, Any]:
    """Celery's configuration for `settings` (a `common.settings.Settings`, which imports this
    module for the limits above)."""
    tls = settings.redis_ssl or False
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            "health_check_interval": 25,
        },
        # TLS (rediss://) checks the server's certificate as REDIS_SSL_CERT_REQS says; kombu
        # alone would check nothing.
        "broker_use_ssl": tls,
        "redis_backend_use_ssl": tls,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT,
        "task_time_limit": TASK_TIME_LIMIT,
        # Results are never read: the database records what happened.
        "task_ignore_result": True,
        "result_backend": None,
        # At-least-once: a task is acknowledged after it ran, and redelivered if its worker
        # died. The task itself makes running twice harmless (a conditional claim of the row).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # When the worker loses Redis, the sends it runs go on and record their replies (a
        # redelivered copy finds its rows claimed); cancelling them would cut sends off
        # mid-call. Said explicitly, as Celery 6 means to change the default.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Flower shows the flow from the workers' events: received, started, succeeded or
        # failed; the backlog not yet received is the queue's length. No "sent" event: it
        # would double the cost of every publish from the web process.
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "task_track_started": True,
        "task_default_queue": settings.celery_queue,
        # The Procfile passes the same to --concurrency; the worker's database pool follows it.
        "worker_concurrency": settings.worker_concurrency,
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "sweep-notifications": {
                "task": "notifications.sweep",
                "schedule": SWEEP_EVERY,
                "options": {"expires": SWEEP_EVERY},
            },
        },
    }
