"""Liveness and readiness probes."""

from __future__ import annotations

import redis
from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text

from models.db import db

blueprint = Blueprint("health", __name__)
TIMEOUT_SECONDS = 1.0


def init_app(app: Flask, redis_url: str) -> None:
    """Give the readiness probe its own Redis client with short timeouts."""
    app.extensions["health_redis"] = redis.Redis.from_url(
        redis_url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )
    app.register_blueprint(blueprint)


@blueprint.get("/healthz")
def healthz():
    """The process is alive; checks no dependency."""
    return jsonify({"status": "ok"})


def _postgres() -> None:
    try:
        db.session.execute(text("SET LOCAL statement_timeout = 1000"))
        db.session.execute(text("SELECT 1"))
    finally:
        db.session.rollback()


def _redis() -> None:
    current_app.extensions["health_redis"].ping()


@blueprint.get("/readyz")
def readyz():
    """Ready while Postgres answers `SELECT 1`: every query and mutation needs it, so 503 only
    without it. Redis is named in the body but decides nothing: without it the web still
    serves everything (SMS wait QUEUED for the sweep, rate limits count per process), and a
    Redis blip must not take every web pod out of its load balancer at once."""
    checks: dict[str, str] = {}
    for name, check in (("postgres", _postgres), ("redis", _redis)):
        try:
            check()
            checks[name] = "ok"
        except Exception as error:  # any failure means down
            checks[name] = f"down: {type(error).__name__}"
    ready = checks["postgres"] == "ok"
    status = "unavailable" if not ready else "ready" if checks["redis"] == "ok" else "degraded"
    response = jsonify({"status": status, "checks": checks})
    response.status_code = 200 if ready else 503
    return response
