"""SMS under faults, with real parts: a Celery worker subprocess (the Procfile's pool), real
PostgreSQL and Redis, and the local gateway over HTTP at a latency that keeps sends in flight.
The gateway tells a reply that reached the worker from one cut off mid-call (dev.replies).

Each fault is injected during a burst: the worker SIGKILLed (twice), the worker told to stop
(SIGTERM) mid-drain, the worker's PostgreSQL backends terminated mid-batch, Redis killed and
started again. Then every SMS must reach the gateway (none lost); a copy beyond the first is
allowed only where a kill cut a send off (and at most one more per kill: a reply that had
reached the worker's socket but not its database), and then its notification says so (an
interrupted attempt: `inDoubt`); nothing is left SENDING.

Each test prints what it counted (sent, cut mid-call, other duplicates, lost): run with `-s`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from celery import Celery
from flask import Flask
from sqlalchemy import func, insert, select

from dev.sms_gateway import FakeSmsGateway, RunningGateway
from models.customers import Customer
from models.db import db
from models.messages import message_body
from models.notifications import (
    AttemptOutcome,
    Notification,
    NotificationAttempt,
    NotificationKind,
    NotificationStatus,
)
from models.orders import Order
from tests.sms_support import (  # noqa: F401 - fixtures, used by name
    API_KEY,
    REDIS_URL,
    WorkerProcess,
    committed_sms,
    forget_unacked,
    wait_for,
    worker_env,
)

BURST = 120  # six tasks of twenty: more than the worker's four pool threads hold at once
LATENCY = 0.25
# A real gateway's answers vary; a constant latency would bring every reply of a burst back in
# the same instant.
JITTER = 0.1
LEASE_SECONDS = 12  # the least the settings allow with SMS_TIMEOUT at 2 s
DEADLINE = 90.0  # a safeguard against a hang, never a measure of speed


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[RunningGateway]:
    server = FakeSmsGateway(username="sandbox", api_key=API_KEY, latency=LATENCY, jitter=JITTER)
    running = server.serve_in_thread("127.0.0.1", 0)
    yield running
    running.shutdown()


@pytest.fixture
def gateway(gateway_server: RunningGateway) -> FakeSmsGateway:
    gateway_server.gateway.reset()
    return gateway_server.gateway


@dataclass
class Shop:
    """What a test drives: its app (for the database), queue, broker, gateway and workers."""

    app: Flask
    queue: str
    broker_url: str
    gateway: FakeSmsGateway
    env: dict[str, str]
    workers: list[WorkerProcess]

    def worker(self) -> WorkerProcess:
        """A new worker, started (the Procfile's pool, four tasks at a time)."""
        process = WorkerProcess(self.env)
        self.workers.append(process)
        process.start(timeout=60)
        return process

    def notifications(self, count: int) -> list[uuid.UUID]:
        """`count` QUEUED notifications, each to a phone of its own, committed."""
        ids, customers, orders, notifications = [], [], [], []
        base = uuid.uuid4().int % 9_000_000
        for n in range(count):
            customer_id, order_id, notification_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            phone = f"+25471{base + n:07d}"  # Safaricom numbers, one per notification
            customers.append(
                {
                    "id": customer_id,
                    "code": f"F{uuid.uuid4().hex[:12]}",
                    "name": f"C{n}",
                    "phone": phone,
                }
            )
            orders.append(
                {
                    "id": order_id,
                    "customer_id": customer_id,
                    "quantity": 1,
                    "unit_price": Decimal("10.00"),
                    "total": Decimal("10.00"),
                    "currency": "KES",
                    "status": "NEW",
                    "created_by": "faults",
                }
            )
            body = message_body(
                NotificationKind.ORDER_PLACED,
                company="Faults",
                order_id=order_id,
                total=Decimal("10.00"),
                currency="KES",
            )
            notifications.append(
                {
                    "id": notification_id,
                    "order_id": order_id,
                    "kind": NotificationKind.ORDER_PLACED.value,
                    "phone": phone,
                    "body": body,
                }
            )
            ids.append(notification_id)
        with self.app.app_context():
            db.session.execute(insert(Customer.__table__), customers)
            db.session.execute(insert(Order.__table__), orders)
            db.session.execute(insert(Notification.__table__), notifications)
            db.session.commit()
            db.session.remove()
        return ids

    def publish(self, ids: list[uuid.UUID]) -> None:
        """The ids as the web's relay publishes them: send_batch tasks of twenty."""
        for start in range(0, len(ids), 20):
            self._send_task("notifications.send_batch", [[str(i) for i in ids[start : start + 20]]])

    def sweep(self) -> None:
        """Ask a worker to run the periodic sweep now (beat would, every 30 s)."""
        self._send_task("notifications.sweep", [])

    def _send_task(self, name: str, args: list[Any]) -> None:
        producer = Celery("faults", broker=self.broker_url)
        producer.conf.broker_connection_retry_on_startup = True
        try:
            producer.send_task(name, args=args, queue=self.queue, retry=True)
        finally:
            producer.close()

    def rows(self, ids: list[uuid.UUID]) -> dict[str, int]:
        with self.app.app_context():
            try:
                found = db.session.execute(
                    select(Notification.status, func.count())
                    .where(Notification.id.in_(ids))
                    .group_by(Notification.status)
                ).all()
            finally:
                db.session.remove()
        return dict(found)

    def interrupted(self, ids: list[uuid.UUID]) -> set[str]:
        """The phones of the notifications with an interrupted attempt."""
        with self.app.app_context():
            try:
                return set(
                    db.session.scalars(
                        select(Notification.phone)
                        .join(NotificationAttempt)
                        .where(
                            Notification.id.in_(ids),
                            NotificationAttempt.outcome == AttemptOutcome.INTERRUPTED,
                        )
                    )
                )
            finally:
                db.session.remove()

    def last_attempts(self, ids: list[uuid.UUID]) -> dict[str | None, int]:
        """How many notifications' last attempt came to each outcome (None: still open)."""
        with self.app.app_context():
            try:
                last = (
                    select(NotificationAttempt.notification_id, NotificationAttempt.outcome)
                    .where(NotificationAttempt.notification_id.in_(ids))
                    .order_by(NotificationAttempt.notification_id, NotificationAttempt.id.desc())
                    .distinct(NotificationAttempt.notification_id)
                    .subquery()
                )
                found = db.session.execute(
                    select(last.c.outcome, func.count()).group_by(last.c.outcome)
                ).all()
            finally:
                db.session.remove()
        return dict(found)

    def open_attempts(self, ids: list[uuid.UUID]) -> int:
        """Attempts of these notifications with no outcome: sends still under way."""
        with self.app.app_context():
            try:
                return db.session.scalar(
                    select(func.count()).where(
                        NotificationAttempt.notification_id.in_(ids),
                        NotificationAttempt.outcome.is_(None),
                    )
                )
            finally:
                db.session.remove()

    def drained(self, ids: list[uuid.UUID], *, sweeping: bool = False) -> dict[str, int]:
        """Wait until every notification is SENT (asking for sweeps meanwhile, if the fault
        left work only the sweep takes up) and no reply is pending at the gateway."""

        def done() -> bool:
            """every SMS SENT and settled at the gateway"""
            if self.rows(ids).get(NotificationStatus.SENT, 0) == len(ids):
                return self.gateway.stats()["replies"]["pending"] == 0
            if sweeping:
                self.sweep()
                time.sleep(1)
            return False

        wait_for(done, timeout=DEADLINE, every=0.2)
        return self.rows(ids)

    def tally(self, ids: list[uuid.UUID], kills: int, label: str) -> dict[str, int]:
        """What reached the gateway, checked against the promises; printed for the record."""
        phones = self.phones(ids)
        copies = {entry["to"]: entry for entry in self.gateway.copies() if entry["to"] in phones}
        lost = len(phones - copies.keys())
        duplicates = sum(entry["duplicates"] for entry in copies.values())
        cut = sum(entry["cut"] for entry in copies.values() if entry["duplicates"])
        unexplained = sum(entry["unexplained"] for entry in copies.values())
        doubtful = self.interrupted(ids)
        twice = {phone for phone, entry in copies.items() if entry["duplicates"]}
        counts = {
            "sent": len(copies),
            "copies": sum(len(entry["copies"]) for entry in copies.values()),
            "cut mid-call": cut,
            "other duplicates": unexplained,
            "lost": lost,
            "in doubt": len(doubtful),
        }
        print(f"\n{label}: {counts}")
        assert lost == 0, counts
        # Every SMS's last attempt is the one that went through, and no attempt is left
        # open: each one cut off says so (interrupted), none reads as still under way.
        assert self.last_attempts(ids) == {AttemptOutcome.ACCEPTED: len(ids)}, counts
        assert self.open_attempts(ids) == 0, counts
        assert twice <= doubtful, f"duplicates without an interrupted attempt: {twice - doubtful}"
        # A reply in the worker's socket when it dies is lost with it: at most one per kill.
        assert unexplained <= kills, counts
        if kills == 0:
            assert duplicates == 0, counts
            assert doubtful == set(), counts
        return counts

    def phones(self, ids: list[uuid.UUID]) -> set[str]:
        with self.app.app_context():
            try:
                return set(
                    db.session.scalars(select(Notification.phone).where(Notification.id.in_(ids)))
                )
            finally:
                db.session.remove()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def shop(
    app,
    committed_sms,  # noqa: F811 - the fixture imported above
    gateway,
    gateway_server,
    database_url,
) -> Iterator[Callable[..., Shop]]:
    """`shop(broker_url=...)`: a queue of the test's own on that Redis (the suite's by
    default), a worker environment with short leases, and every worker stopped afterwards."""
    made: list[Shop] = []

    def make(broker_url: str = REDIS_URL) -> Shop:
        queue = f"faults-{uuid.uuid4().hex[:8]}"
        env = worker_env(database_url, gateway_server.url, queue)
        env.update(
            REDIS_URL=broker_url,
            SMS_TIMEOUT="2",
            SMS_LEASE_SECONDS=str(LEASE_SECONDS),
            SMS_SWEEP_GRACE_SECONDS="2",
        )
        made.append(Shop(app, queue, broker_url, gateway, env, []))
        return made[-1]

    yield make
    for each in made:
        for process in each.workers:
            process.stop()
        if each.broker_url == REDIS_URL:
            forget_unacked(each.queue)


def busy(here: Shop, at_least: int = 10) -> None:
    """Wait until at least `at_least` sends are in flight at the gateway, asking for a sweep
    now and then (a killed worker's reserved tasks come back only through it)."""
    asked = time.monotonic()

    def check() -> bool:
        """sends in flight at the gateway"""
        nonlocal asked
        if time.monotonic() - asked > 1:
            here.sweep()
            asked = time.monotonic()
        return here.gateway.stats()["in_flight"] >= at_least

    wait_for(check, timeout=DEADLINE, every=0.01)


def accepted(gateway: FakeSmsGateway, at_least: int) -> Callable[[], bool]:
    def check() -> bool:
        """messages accepted by the gateway"""
        return gateway.stats()["accepted"] >= at_least

    return check


def test_a_worker_killed_twice_mid_burst_loses_nothing_and_each_duplicate_is_in_doubt(shop):
    here = shop()
    ids = here.notifications(BURST)
    first = here.worker()
    here.publish(ids)

    busy(here)
    first.kill()
    second = here.worker()
    busy(here)
    second.kill()
    here.worker()

    assert here.drained(ids, sweeping=True) == {NotificationStatus.SENT: BURST}
    counts = here.tally(ids, kills=2, label="SIGKILL x2")
    assert counts["cut mid-call"] >= 1  # the kills did cut sends off


def test_a_worker_told_to_stop_mid_drain_hands_back_what_it_holds(shop):
    here = shop()
    ids = here.notifications(BURST)
    first = here.worker()
    here.publish(ids)

    busy(here)
    first.stop()  # SIGTERM: a warm shutdown
    here.worker()

    assert here.drained(ids, sweeping=True) == {NotificationStatus.SENT: BURST}
    here.tally(ids, kills=0, label="SIGTERM")


def test_postgres_backends_killed_mid_batch_lose_and_duplicate_nothing(shop, database_url):
    here = shop()
    ids = here.notifications(BURST)
    here.worker()
    here.publish(ids)
    database = database_url.rsplit("/", 1)[1]
    admin_url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    killed = 0

    with psycopg.connect(admin_url, autocommit=True) as admin:
        for _ in range(3):
            busy(here)
            killed += admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() "
                "AND application_name = 'order-service-worker' "
                "AND backend_type = 'client backend'",
                (database,),
            ).fetchone()[0]
            wait_for(
                accepted(here.gateway, here.gateway.stats()["accepted"] + 10), timeout=DEADLINE
            )

    assert killed > 0  # the worker's connections were cut
    assert here.drained(ids, sweeping=True) == {NotificationStatus.SENT: BURST}
    here.tally(ids, kills=0, label="pg_terminate_backend x3")


@pytest.fixture
def own_redis() -> Iterator[Callable[[], None]]:
    """A Redis of the test's own (no persistence, as Heroku's plans and the machine's own
    run); the fixture's value restarts it after a SIGKILL, on the same port."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (Debian's redis-server package)"
    port = _free_port()
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(
            subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

        def answers() -> bool:
            """the test's Redis answering"""
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(answers, timeout=20)

    start()
    start.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    start.kill = lambda: (processes[-1].kill(), processes[-1].wait(timeout=10))  # type: ignore[attr-defined]
    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_redis_cut_and_restored_mid_burst_loses_and_duplicates_nothing(shop, own_redis):
    here = shop(broker_url=own_redis.url)
    ids = here.notifications(BURST)
    here.worker()
    here.publish(ids)

    busy(here)
    own_redis.kill()  # the queue, with what it held, is gone
    time.sleep(1)  # Redis stays away for a moment, as in a failover
    own_redis()

    assert here.drained(ids, sweeping=True) == {NotificationStatus.SENT: BURST}
    here.tally(ids, kills=0, label="Redis cut and restored")
