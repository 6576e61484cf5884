"""A Celery task that does nothing, on the service's own Celery app and settings.

Draining these measures what Celery itself costs per task (broker round trips, acks, events,
the app-context wrapper every task of ours runs in): the ceiling for the SMS drain. The harness
loads it into a worker of its own with `--include bench.noop_tasks`.
"""

from __future__ import annotations

from celery import shared_task

NOOP_TASK = "bench.noop"


@shared_task(name=NOOP_TASK)
def noop() -> None:
    """Nothing at all."""
