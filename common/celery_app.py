"""The Celery app of a Flask app, as Flask's Celery guide builds it: configured from the app's
settings, its tasks run inside the app's context (its database session, its settings)."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask

import celeryconfig


def celery_init_app(app: Flask) -> Celery:
    """Give `app` its Celery app (`app.extensions["celery"]`), the process's default one: the
    worker's tasks (`shared_task`) and the web's publishing both use it."""

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    # The default app, not this thread's current one: a test's later app must not take over
    # the tasks a test runs in the app it chose (`set_current`).
    celery_app = Celery("orders", task_cls=FlaskTask, set_as_current=False)
    celery_app.config_from_object(celeryconfig.config(app.config["SETTINGS"]))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
