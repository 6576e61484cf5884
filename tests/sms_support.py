"""Shared fixtures and helpers for the SMS tests: the fake Africa's Talking gateway over real
HTTP, an app configured to send through it, the task runner bound to that app, rows to work
on, a real Celery worker subprocess, and a look into the test run's Redis queue.

Import the fixtures you use into a test module (`from tests.sms_support import ...`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import celery
import pytest
import redis
from flask import Flask
from sqlalchemy import select, text
from werkzeug.serving import make_server

from common.settings import Settings
from dev.sms_gateway import FakeSmsGateway, RunningGateway
from models.db import db
from models.notifications import (
    OUTBOX_KEY,
    AttemptOutcome,
    Notification,
    NotificationAttempt,
    NotificationKind,
    NotificationStatus,
)
from models.sending import Claimed, Settlement, claim, settle
from tests.factories import OrderFactory, OutboxMessage, enqueue
from web import create_app

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sandbox-api-key-of-the-test-gateway"  # as long as a real one
CALLBACK_SECRET = "cb-secret"
COMPANY = "Acme Duka"
BACKOFF_BASE = 4
BACKOFF_CAP = 10
MAX_ATTEMPTS = 4
SMS_TIMEOUT = 0.4
GATEWAY_HANG = 4.0  # seconds a scripted "timeout" holds the request before dropping it
JANE_PHONE = "+254712345678"  # jane's phone_number claim in dev/users.json
DELIVERY_PATH = "/callbacks/africastalking/delivery"
POLL_DEADLINE = 15.0
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def dispose(application: Flask) -> None:
    with application.app_context():
        for engine in db.engines.values():
            engine.dispose()


# -- the gateway and the app that sends through it ------------------------------------------


@pytest.fixture(scope="session")
def gateway_server() -> Iterator[RunningGateway]:
    """The fake gateway on 127.0.0.1 (a free port) for the whole run."""
    running = FakeSmsGateway(username="sandbox", api_key=API_KEY, hang=GATEWAY_HANG)
    server = running.serve_in_thread("127.0.0.1", 0)
    yield server
    server.shutdown()


@pytest.fixture
def gateway(gateway_server: RunningGateway) -> FakeSmsGateway:
    """The gateway with no messages, scripts or counters left from an earlier test."""
    gateway_server.gateway.reset()
    return gateway_server.gateway


@pytest.fixture(scope="session")
def sms_settings(settings: Settings, gateway_server: RunningGateway) -> Settings:
    return replace(
        settings,
        at_api_key=API_KEY,
        at_username="sandbox",
        at_api_url=gateway_server.url,
        at_callback_secret=CALLBACK_SECRET,
        company_name=COMPANY,
        sms_backoff_base=BACKOFF_BASE,
        sms_backoff_cap=BACKOFF_CAP,
        sms_max_attempts=MAX_ATTEMPTS,
        sms_timeout=SMS_TIMEOUT,
    )


@pytest.fixture(scope="session")
def sms_app(app: Flask, sms_settings: Settings) -> Iterator[Flask]:
    """The service configured for the fake gateway (`app` first, so migrations have run)."""
    application = create_app(sms_settings)
    yield application
    dispose(application)


@contextmanager
def bound(application: Flask) -> Iterator[Flask]:
    """Run tasks called in this process (and publish the tasks they publish) with
    `application`'s Celery app; restore the previous one after."""
    previous = celery.current_app._get_current_object()
    application.extensions["celery"].set_current()
    try:
        yield application
    finally:
        previous.set_current()


@pytest.fixture
def tasks_app(sms_app: Flask) -> Iterator[Flask]:
    """Tasks called directly (`send_notification(id)`, `sweep()`) run in `sms_app`."""
    with bound(sms_app):
        yield sms_app


@pytest.fixture(scope="session")
def sms_http(sms_app: Flask) -> Iterator[str]:
    """`sms_app` served over real HTTP on 127.0.0.1 (for the gateway's delivery reports);
    yields its base URL."""
    server = make_server("127.0.0.1", 0, sms_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# -- rows -----------------------------------------------------------------------------------


def make_notification(
    session: Any,
    *,
    phone: str | None = "+254711000001",
    kind: NotificationKind = NotificationKind.ORDER_PLACED,
    total: str = "1200.00",
    company: str = COMPANY,
) -> Notification:
    """A QUEUED notification for a new order of a customer whose phone is `phone`, committed
    in the test's session; its id is not published (tests run the task themselves)."""
    order = OrderFactory(unit_price=Decimal(total), customer__phone=phone)
    notification = enqueue(
        session,
        OutboxMessage(
            order_id=order.id, kind=kind, phone=phone, total=order.total, currency=order.currency
        ),
        company=company,
    )
    session.flush()
    session.info.pop(OUTBOX_KEY, None)
    session.commit()
    # A worker's task starts with an empty session; so does the task run by the test.
    session.expunge_all()
    return notification


def run_send(session: Any, notification_id: uuid.UUID | str) -> str:
    """Call the send task in-process, as a worker would: with nothing of the row in the
    session's identity map (a worker's task starts with a new session)."""
    from worker.tasks import send_notification

    session.expunge_all()
    return send_notification(str(notification_id))


def fresh(session: Any, notification_id: uuid.UUID | str) -> Notification:
    """The row as the database has it now (the tasks update it behind the identity map)."""
    session.expire_all()
    return session.get_one(Notification, uuid.UUID(str(notification_id)))


def attempts_of(session: Any, notification_id: uuid.UUID | str) -> list[NotificationAttempt]:
    session.expire_all()
    return list(
        session.scalars(
            select(NotificationAttempt)
            .where(NotificationAttempt.notification_id == uuid.UUID(str(notification_id)))
            .order_by(NotificationAttempt.id)
        )
    )


def claim_row(session: Any, notification_id: uuid.UUID | str) -> Claimed:
    """The worker's claim of one QUEUED, due row, committed: SENDING, with an attempt open."""
    (held,) = claim(
        session, notification_ids=[uuid.UUID(str(notification_id))], lease=timedelta(minutes=1)
    )
    session.commit()
    return held


def settle_reply(
    session: Any,
    held: Claimed,
    reply: Any,
    outcome: AttemptOutcome = AttemptOutcome.ACCEPTED,
    to: NotificationStatus = NotificationStatus.SENT,
    retry_in: timedelta | None = None,
) -> bool:
    """What the worker records when a reply arrives, committed; whether the row moved."""
    moved = settle(session, [Settlement(held, reply, outcome, to, retry_in)])
    session.commit()
    return held.notification.id in moved


def set_row(session: Any, notification_id: uuid.UUID | str, assignments: str, **params: Any):
    """Data setup: `UPDATE notifications SET <assignments> WHERE id = :id`, committed."""
    session.execute(
        text(f"UPDATE notifications SET {assignments} WHERE id = :id"),  # noqa: S608 - tests
        {"id": str(notification_id), **params},
    )
    session.commit()
    session.expire_all()  # what the session holds of the row is out of date now


# -- the broker -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def task_queue(settings: Settings) -> str:
    """The queue tasks published from this process go to: the run's (conftest empties it)."""
    return settings.celery_queue


def published_tasks(queue: str) -> list[dict[str, Any]]:
    """The task messages waiting in `queue` in Redis: task name, args and eta of each."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        raw = client.lrange(queue, 0, -1)
    finally:
        client.close()
    found = []
    for item in raw:
        message = json.loads(item)
        headers = message.get("headers", {})
        body = json.loads(base64.b64decode(message["body"]))
        found.append({"task": headers.get("task"), "args": body[0], "eta": headers.get("eta")})
    return found


def publications_of(notification_id: uuid.UUID | str, queue: str) -> list[dict[str, Any]]:
    """The send tasks waiting in `queue` that carry this notification: `notifications.send`
    of it alone, or a `notifications.send_batch` listing it."""
    wanted = str(notification_id)
    return [
        task
        for task in published_tasks(queue)
        if (task["task"] == "notifications.send" and task["args"] == [wanted])
        or (task["task"] == "notifications.send_batch" and wanted in task["args"][0])
    ]


def published_ids(queue: str) -> list[str]:
    """The notification ids the send tasks waiting in `queue` carry, once per publication."""
    ids: list[str] = []
    for task in published_tasks(queue):
        if task["task"] == "notifications.send_batch":
            ids.extend(task["args"][0])
        elif task["task"] == "notifications.send":
            ids.extend(task["args"])
    return ids


def relayed(relay: Any, queue: str) -> list[str]:
    """The ids published to `queue` once everything handed to `relay` until now is out: the
    relay keeps the order it is handed ids in, so when a marker handed to it now reaches the
    queue, every id handed to it before has too (or was dropped, and counted). No waiting
    for a while to see whether something comes."""
    marker = str(uuid.uuid4())
    relay.submit([uuid.UUID(marker)])

    def out() -> bool:
        """the relay's marker to reach the queue"""
        return marker in published_ids(queue)

    wait_for(out)
    return [published for published in published_ids(queue) if published != marker]


def wait_for(check: Callable[[], Any], *, timeout: float = POLL_DEADLINE, every: float = 0.1):
    """Poll `check` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {check.__doc__ or check}")
        time.sleep(every)


# -- committed rows -------------------------------------------------------------------------


@pytest.fixture
def committed_sms(app: Flask) -> Iterator[None]:
    """Real commits (for other threads and processes to see); afterwards every table an SMS
    test writes is emptied, the notifications tables named explicitly."""
    yield
    with app.app_context():
        db.session.execute(
            text(
                "TRUNCATE delivery_reports, notification_attempts, notifications, "
                "order_events, idempotency_keys, orders, customers CASCADE"
            )
        )
        db.session.commit()


def db_rows(application: Flask, statement: Any) -> list[Any]:
    """Rows read on a connection of `application` (committed data only)."""
    with application.app_context():
        try:
            return list(db.session.scalars(statement))
        finally:
            db.session.remove()


# -- a real Celery worker -------------------------------------------------------------------


def procfile_pool() -> str:
    """The pool the Procfile's `worker` process runs tasks in (Celery's default: prefork)."""
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("worker:")
    )
    match = re.search(r"--pool[= ](\S+)", line)
    return match.group(1) if match else "prefork"


class WorkerProcess:
    """`celery --app worker.main worker` as a subprocess on this run's queue; start, kill, stop."""

    def __init__(
        self, env: dict[str, str], *, pool: str | None = None, concurrency: int = 4
    ) -> None:
        self.env = env
        self.queue = env["CELERY_QUEUE"]
        self.pool = pool or procfile_pool()
        self.concurrency = concurrency
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.started = 0

    def start(self, timeout: float = 60.0) -> None:
        assert self.process is None, "a worker is already running"
        self.lines = []
        self.process = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "celery"),
                "--app",
                "worker.main",
                "worker",
                f"--pool={self.pool}",
                f"--concurrency={self.concurrency}",
                "-Q",
                self.queue,
                "--without-mingle",
                "--without-gossip",
                "--loglevel=INFO",
                f"--hostname=sms-test-{uuid.uuid4().hex[:6]}@%h",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not any(" ready." in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = "".join(self.lines)
                self.stop()
                pytest.fail(f"the Celery worker did not become ready:\n{output}")
            time.sleep(0.05)
        self.started += 1

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-whatever, acknowledging nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL
        self._release()

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL if it lingers; returns once the process is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._release()

    def _release(self) -> None:
        assert self.process is not None
        self._reader.join(timeout=5)  # the pipe ends with the process
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def output(self) -> str:
        return "".join(self.lines)


def worker_env(database_url: str, gateway_url: str, queue: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AT_", "SMS_", "APP_ENV", "FLASK_ENV", "COMPANY_NAME"))
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        CELERY_QUEUE=queue,
        AT_API_KEY=API_KEY,
        AT_USERNAME="sandbox",
        AT_API_URL=gateway_url,
        SMS_BACKOFF_BASE="1",
        SMS_BACKOFF_CAP="2",
        SMS_TIMEOUT="10",
        COMPANY_NAME=COMPANY,
        PYTHONUNBUFFERED="1",
    )
    return env


def forget_unacked(queue: str) -> int:
    """Drop this queue's messages from kombu's `unacked` hash (a SIGKILLed worker leaves its
    task there, to be restored only after the visibility timeout); returns how many."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        dropped = 0
        for tag, value in client.hgetall("unacked").items():
            _message, _exchange, routing_key = json.loads(value)
            if routing_key == queue:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
                dropped += 1
        return dropped
    finally:
        client.close()


@pytest.fixture(scope="module")
def celery_worker(
    database_url: str, gateway_server: RunningGateway, app: Flask, settings: Settings
) -> Iterator[WorkerProcess]:
    """A real worker on the run's queue (where the app's relay publishes) for the module;
    tests may kill it and start it again."""
    process = WorkerProcess(worker_env(database_url, gateway_server.url, settings.celery_queue))
    process.start()
    yield process
    process.stop()
    forget_unacked(settings.celery_queue)
