"""Pieces the web process, the worker, beat and Flower all use: settings, logs, metrics,
error reports and the Celery app's configuration. Nothing here imports web, worker or models."""
