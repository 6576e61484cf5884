"""Celery settings for the worker, beat and the web process that publishes tasks.

Read by `worker.celery_app` with `config_from_object`; the values come from `web.config`.
"""

from __future__ import annotations

from web.config import Settings

_settings = Settings.from_env()

# Retries wait at most SMS_BACKOFF_CAP seconds and a task runs at most task_time_limit
# seconds; Redis redelivers an unacknowledged task after visibility_timeout, so it must be
# longer than both together or a waiting retry would run twice. (The thread pool of the
# Procfile does not enforce the time limits; there the sender's timeouts bound a send.)
task_soft_time_limit = 40
task_time_limit = 45
visibility_timeout = 3600
assert _settings.sms_backoff_cap + task_time_limit < visibility_timeout

broker_url = _settings.redis_url
broker_connection_retry_on_startup = True
broker_connection_timeout = 3
broker_transport_options = {
    "visibility_timeout": visibility_timeout,
    "socket_timeout": 5,
    "socket_connect_timeout": 3,
    "health_check_interval": 25,
}
# TLS (rediss://) checks the server's certificate as REDIS_SSL_CERT_REQS says; kombu alone
# would check nothing.
if _settings.redis_ssl:
    broker_use_ssl = redis_backend_use_ssl = _settings.redis_ssl

# Results are never read: the database records what happened.
task_ignore_result = True
result_backend = None

# At-least-once: a task is acknowledged after it ran, and redelivered if its worker died.
# The task itself makes running twice harmless (a conditional claim of the row).
task_acks_late = True
task_reject_on_worker_lost = True
# When the worker loses Redis, the sends it runs go on and record their replies (a redelivered
# copy finds its rows claimed); cancelling them would cut sends off mid-call. Said explicitly,
# as Celery 6 means to change the default.
worker_cancel_long_running_tasks_on_connection_loss = False
worker_prefetch_multiplier = 1

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# Flower shows the flow from the workers' events: received, started, succeeded or failed; the
# backlog not yet received is the queue's length (Flower's Broker tab, `celery_queue_length`).
# No "sent" event: it would double the cost of every publish from the web process.
worker_send_task_events = True
task_send_sent_event = False
task_track_started = True

task_default_queue = _settings.celery_queue
# The Procfile passes the same to --concurrency; the worker's database pool follows it.
worker_concurrency = _settings.worker_concurrency
timezone = "UTC"
enable_utc = True
worker_hijack_root_logger = False

# A sweep no worker took within its period is dropped: the next one does the same work, and
# sweeps piled up while no worker ran would each publish the whole backlog again.
SWEEP_EVERY = 30.0
beat_schedule = {
    "sweep-notifications": {
        "task": "notifications.sweep",
        "schedule": SWEEP_EVERY,
        "options": {"expires": SWEEP_EVERY},
    },
}
