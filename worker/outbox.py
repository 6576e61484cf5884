"""After commit, notification ids reach Celery from a background thread of the web process.

The request only puts ids on an in-memory queue, so it never waits on Redis. If Redis is
down the publish fails, the ids are dropped, and the rows wait QUEUED in Postgres for the
periodic sweep: Postgres is the record, Redis only the doorbell.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable

from sqlalchemy import event
from sqlalchemy.orm import Session

from models.notifications import OUTBOX_KEY

log = logging.getLogger(__name__)

BACKLOG_LIMIT = 10_000
PAUSE_AFTER_FAILURE_SECONDS = 5.0


class Relay:
    """Publishes notification ids to Celery from one daemon thread per process."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str] = queue.Queue(maxsize=BACKLOG_LIMIT)
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def submit(self, ids: Iterable[uuid.UUID]) -> None:
        """Queue ids for publishing; never blocks, never raises."""
        self._ensure_thread()
        for notification_id in ids:
            try:
                self._queue.put_nowait(str(notification_id))
            except queue.Full:
                log.warning("outbox relay backlog full; the sweep will send the rest")
                return

    def _ensure_thread(self) -> None:
        # A thread does not survive fork: gunicorn workers each start their own.
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.Queue(maxsize=BACKLOG_LIMIT)
                    threading.Thread(target=self._run, name="outbox-relay", daemon=True).start()
                    self._pid = os.getpid()

    def _run(self) -> None:
        from worker.tasks import send_notification

        while True:
            notification_id = self._queue.get()
            if time.monotonic() < self._paused_until:
                continue  # Redis was just down: leave it to the sweep rather than pile up
            try:
                send_notification.apply_async((notification_id,), retry=False)
            except Exception as error:
                self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
                log.warning("could not publish to the broker (%s); the sweep will send it", error)


relay = Relay()


def _after_commit(session: Session) -> None:
    ids = session.info.pop(OUTBOX_KEY, None)
    if ids:
        relay.submit(ids)


def _after_rollback(session: Session) -> None:
    session.info.pop(OUTBOX_KEY, None)


def install() -> None:
    """Publish remembered notification ids after every commit, for any session."""
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)
