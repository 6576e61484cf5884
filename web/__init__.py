"""The web process: `create_app` builds the Flask app for gunicorn, the worker and the tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, jsonify
from flask_migrate import Migrate
from werkzeug.exceptions import HTTPException

from common import logs, sentry
from common.settings import Settings, warn_once
from models.db import db, ping_when_idle
from web import database_errors, request_ids, security, slow_clients

ROOT = Path(__file__).resolve().parent.parent
migrate = Migrate()


def create_app(config: Settings | dict[str, Any] | None = None, *, role: str = "web") -> Flask:
    """Build the app from `config` (a Settings, or overrides of the environment's settings).
    `role` names the process's database connections (`order-service-web`, `-worker`), so an
    operator tells them apart in pg_stat_activity."""
    if isinstance(config, Settings):
        settings = config
    else:
        settings = Settings.from_env()
        if config:
            settings = Settings(**{**settings.__dict__, **config})

    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS={
            # A connection for each thread that may hold one (WORKER_CONCURRENCY in a worker,
            # WEB_THREADS in a web process), each kept once opened: with fewer, busy threads
            # would wait for each other (pool_timeout), and "overflow" connections would be
            # opened and closed all the time, each a new PostgreSQL backend.
            "pool_size": settings.db_pool_size(role),
            "max_overflow": 0,
            "pool_timeout": 5,
            "connect_args": {"connect_timeout": 5, "application_name": f"order-service-{role}"},
            # A failed statement's message lists its parameters (phone numbers, e-mails);
            # production's logs and error reports get the statement without them.
            "hide_parameters": settings.is_production,
        },
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PROPAGATE_EXCEPTIONS=False,
    )
    # A response's fields in the order the query asked for them, as the GraphQL spec asks
    # (Flask sorts keys by default; its JSON_SORT_KEYS setting is gone since 2.3).
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Text goes out as UTF-8, as JSON's own encoding: escaped, an emoji takes 12 bytes instead
    # of 4, and a page of names in a non-Latin script three to six times its size.
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    logs.configure(settings.log_level)
    warn_once(settings)
    request_ids.init_app(app)
    # First of the request hooks: none of them may wait on a client's body.
    slow_clients.init_app(app)
    security.init_app(app, settings)
    sentry.init(settings)

    db.init_app(app)
    with app.app_context():
        for engine in db.engines.values():
            ping_when_idle(engine)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), compare_type=True)

    # Here, not at the top: these make the metrics (common.metrics), which needs its directory,
    # and gunicorn imports this package for its access logger before that is checked.
    from common.celery_app import celery_init_app
    from models import outbox
    from web import (
        auth,
        callbacks,
        commands,
        cors,
        graphql,
        health,
        metrics,
        persisted_queries,
        rate_limits,
    )

    outbox.init_app(app, celery_init_app(app), settings.celery_queue)
    app.extensions["graphql"] = graphql.GraphQLService(settings)
    persisted_queries.init_app(app, settings)
    cors.init_app(app, settings)
    auth.init_app(app, settings)
    rate_limits.init_app(app, settings)
    app.register_blueprint(graphql.blueprint)
    health.init_app(app, settings.redis_url, settings.redis_ssl)
    metrics.init_app(app, settings)
    commands.init_app(app)
    app.register_blueprint(callbacks.blueprint)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _http_error(error: HTTPException):
    response = jsonify(
        {
            "errors": [
                {
                    "message": error.description,
                    "extensions": {"code": error.name.upper().replace(" ", "_")},
                }
            ]
        }
    )
    response.status_code = error.code or 500
    if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def _unexpected_error(error: Exception):
    failure = database_errors.classify(error)
    if failure is not None:  # the database refused or went away: not a bug of ours
        database_errors.log_failure(failure, error)
        return database_errors.response(failure)
    logging.getLogger(__name__).exception("unhandled error")
    sentry.capture(error)
    response = jsonify(
        {
            "errors": [
                {
                    "message": "Internal server error",
                    "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                }
            ]
        }
    )
    response.status_code = 500
    return response
