"""The release step, `python -m web.release`: `flask db upgrade` for one process at a time.

On Kubernetes every web and worker pod runs it in an init container and the migration Job runs
it too, all at once during a rollout. Each takes a PostgreSQL advisory lock first, so one of
them migrates and the others wait for it, then find the schema at its head and do nothing:
no two run the same migration side by side, and no pod serves before the schema is migrated.
"""

from __future__ import annotations

import logging
import zlib

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import text

from models.db import db
from web import create_app

# One key for every process of this service that migrates its database (advisory locks are
# per database): a fixed number, so releases of any version take turns with each other.
LOCK_KEY = zlib.crc32(b"order-service migrations")

log = logging.getLogger("web.release")


def migrate(app: Flask) -> None:
    """Wait for the migration lock, upgrade `app`'s database to the newest revision, and
    release the lock."""
    with app.app_context(), db.engine.connect() as lock:
        # A session lock on a connection of its own, outside any transaction: the migration
        # commits on another connection, and the lock ends with this process if it dies.
        lock.execution_options(isolation_level="AUTOCOMMIT")
        if not lock.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}):
            log.info("another process is migrating the database; waiting for it")
            lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        try:
            upgrade()
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})


if __name__ == "__main__":
    migrate(create_app(role="migrate"))
