"""After commit, notification ids reach Celery from a background thread of the web process.

The request only puts ids on an in-memory queue, so it never waits on Redis. If Redis is
down the publish fails, the ids are dropped (counted in `sms_relay_dropped_total`), and the
rows wait QUEUED in Postgres for the periodic sweep: Postgres is the record, Redis only the
doorbell. An error no broker outage explains (a bug, a broken broker client) is logged and
the relay started again, so it cannot stop every later publish of the process.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from celery import Celery
from flask import Flask, current_app, has_app_context
from kombu import Connection
from kombu.exceptions import BatchPublishError
from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy import event
from sqlalchemy.orm import Session

from common.metrics import RELAY_DROPPED, RELAY_RESTARTS
from models.notifications import OUTBOX_KEY

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKLOG_LIMIT = 10_000
PAUSE_AFTER_FAILURE_SECONDS = 5.0
# Between a stop on an unexpected error and the restart: an error that comes back with every
# batch then costs a log line a second, not a busy loop.
RESTART_PAUSE_SECONDS = 1.0
PUBLISH_BATCH = 100
# After the first id of a batch, wait this long for more (unless a full batch is already
# there): a publish costs far more CPU per id alone than in a batch, and an SMS 50 ms later
# is no later to anyone.
GATHER_SECONDS = 0.05
SEND_BATCH_TASK = "notifications.send_batch"
# Ids per task. The worker sends a task's messages side by side, so a batch takes about as
# long as one send, and Celery's own cost per task and the batch's database round trips are
# paid once for all of them (the sizes tried are in bench/README.md).
TASK_BATCH = 20


def batches(items: list[T], size: int = TASK_BATCH) -> list[list[T]]:
    """`items` in order, cut into lists of at most `size`."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _full_tasks(batch: list[str], carried: int) -> tuple[list[str], list[str]]:
    """The ids of `batch` (its first `carried` left over from the last gathering) to publish
    now, and those to keep for the next: the ids beyond the last full task wait one gathering
    more, unless some of them have waited already. Under load every task then carries
    TASK_BATCH ids (a full task's ids and one more made two tasks, each costing a task's
    publish and receipt); no id waits more than two gatherings."""
    whole = len(batch) - len(batch) % TASK_BATCH
    if whole < carried or whole == len(batch):
        return batch, []
    return batch[:whole], batch[whole:]


class Relay:
    """Publishes notification ids to `celery_app`'s broker, on `queue_name`, from one daemon
    thread per process. `connect` makes the broker connection (default: the Celery app's)."""

    def __init__(
        self,
        celery_app: Celery,
        queue_name: str,
        connect: Callable[[], Connection] | None = None,
    ) -> None:
        self.celery_app = celery_app
        self.queue_name = queue_name
        self._connect = connect or celery_app.connection_for_write
        self._queue: queue.Queue[str] = queue.Queue(maxsize=BACKLOG_LIMIT)
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._producer: Any = None
        # What the broker raises when it cannot be reached, as its transport declares it.
        self._broker_errors: tuple[type[BaseException], ...] = (BrokerUnreachable,)
        self.published = 0

    def submit(self, ids: Iterable[uuid.UUID]) -> None:
        """Queue ids for publishing; never blocks, never raises."""
        self._ensure_thread()
        pending = iter(ids)
        for notification_id in pending:
            try:
                self._queue.put_nowait(str(notification_id))
            except queue.Full:
                RELAY_DROPPED.labels("backlog_full").inc(1 + sum(1 for _ in pending))
                log.warning("outbox relay backlog full; the sweep will send the rest")
                return

    def _ensure_thread(self) -> None:
        # A thread does not survive fork: gunicorn workers each start their own.
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.Queue(maxsize=BACKLOG_LIMIT)
                    self._producer = None
                    threading.Thread(
                        target=self._supervise, name="outbox-relay", daemon=True
                    ).start()
                    self._pid = os.getpid()

    def _supervise(self) -> None:
        """The relay thread: runs the relay, and again after any error that stops it."""
        while True:
            try:
                self._run()
            except Exception:
                RELAY_RESTARTS.inc()
                log.exception(
                    "the outbox relay stopped on an unexpected error; starting it again (the "
                    "sweep sends the ids it held)"
                )
                time.sleep(RESTART_PAUSE_SECONDS)

    def _run(self) -> None:
        carried: list[str] = []  # left over from the last gathering, oldest first
        while True:
            batch = carried or [self._queue.get()]
            if self._queue.qsize() < PUBLISH_BATCH - len(batch):  # else a full batch waits
                time.sleep(GATHER_SECONDS)
            # Whatever piled up meanwhile goes out with it: one pipelined round trip to Redis.
            while len(batch) < PUBLISH_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch, carried = _full_tasks(batch, len(carried))
            if not batch:
                continue
            if time.monotonic() < self._paused_until:
                # Redis was just down: leave it to the sweep rather than pile up.
                RELAY_DROPPED.labels("broker_down").inc(len(batch))
                continue
            try:
                self.publish(batch)
            except Exception as error:
                if not self._broker_down(error):
                    RELAY_DROPPED.labels("relay_error").inc(len(batch) + len(carried))
                    raise
                RELAY_DROPPED.labels("broker_down").inc(len(batch))
                self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
                log.warning("could not publish to the broker (%s); the sweep will send it", error)

    def _broker_down(self, error: BaseException) -> bool:
        """Whether `error` says the broker is out of reach: one of the transport's connection
        errors, or kombu's failed pipelined batch (BatchPublishError) caused by one."""
        if isinstance(error, self._broker_errors):
            return True
        cause = error.__cause__
        if not isinstance(error, BatchPublishError) or cause is None:
            return False
        return self._broker_down(cause)

    def publish(self, notification_ids: list[str]) -> None:
        """Send the ids as `notifications.send_batch` tasks of up to TASK_BATCH ids each over
        this relay's own broker connection, all in one pipelined round trip; if it fails, the
        sweep sends what did not go."""
        if self._producer is None:
            connection = self._connect()
            self._broker_errors = (
                BrokerUnreachable,
                *connection.connection_errors,
                *connection.channel_errors,
            )
            self._producer = self.celery_app.amqp.Producer(connection, auto_declare=False)
        try:
            with self._producer.batch():
                for batch in batches(notification_ids):
                    self.celery_app.send_task(
                        SEND_BATCH_TASK,
                        args=(batch,),
                        queue=self.queue_name,
                        producer=self._producer,
                        retry=False,
                    )
        except Exception:
            self._producer.connection.release()
            self._producer = None
            raise
        self.published += len(notification_ids)


def _after_commit(session: Session) -> None:
    # SQLAlchemy calls this for savepoints too; only the real commit makes rows visible.
    if session.in_nested_transaction():
        return
    ids = session.info.pop(OUTBOX_KEY, None)
    if ids and has_app_context():
        current_app.extensions["outbox_relay"].submit(ids)


def _after_rollback(session: Session) -> None:
    # A rolled-back savepoint may leave ids of rows that never were: publishing them costs a
    # task that finds nothing, while dropping them could delay the real ones to the sweep.
    if not session.in_nested_transaction():
        session.info.pop(OUTBOX_KEY, None)


def init_app(app: Flask, celery_app: Celery, queue_name: str) -> None:
    """Give `app` its relay to `celery_app`'s broker, and publish remembered notification ids
    after every commit."""
    app.extensions["outbox_relay"] = Relay(celery_app, queue_name)
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)
