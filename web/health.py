"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from models.db import db

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    """The process is alive; checks no dependency."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    """Postgres answers `SELECT 1`; 503 naming it when it does not."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as error:
        checks["postgres"] = f"down: {type(error).__name__}"
    finally:
        db.session.rollback()
    ready = all(value == "ok" for value in checks.values())
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return response
