"""The Celery side: the app (`worker.celery_app`), the tasks, and the SMS senders."""

from worker.celery_app import celery_app

__all__ = ["celery_app"]
