"""The Celery side: the worker's entry (`worker.main`), the tasks, and the SMS senders."""
