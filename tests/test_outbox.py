# ruff: noqa: F811 - pytest fixtures imported from tests.sms_support are used by name
"""The outbox relay publishes a notification's id only once the transaction that wrote the
row has committed: a worker must never be handed an id it cannot see yet. What it cannot
publish it counts and leaves to the sweep, and it keeps publishing whatever stopped it."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import kombu
import psycopg
import pytest
import redis
from celery import Celery
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import func, make_url, select, text

from models import outbox
from models.db import db
from models.notifications import Notification, NotificationKind
from tests.clients import GraphQLClient
from tests.conftest import REDIS_URL
from tests.factories import OrderFactory, OutboxMessage, enqueue
from tests.sms_support import (  # noqa: F401 - task_queue is a fixture, used by name
    bound,
    committed_sms,
    publications_of,
    published_tasks,
    relayed,
    set_row,
    task_queue,
    wait_for,
)
from worker.tasks import sweep


def _queue_one(session, order):
    return enqueue(
        session,
        OutboxMessage(
            order_id=order.id,
            kind=NotificationKind.ORDER_PLACED,
            phone="+254711000001",
            total=order.total,
            currency=order.currency,
        ),
        company="Test",
    )


def _forget(queue_name: str) -> None:
    """Delete a test's queue and the bindings kombu keeps for it."""
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(
        queue_name, f"_kombu.binding.{queue_name}", f"_kombu.binding_permanent.{queue_name}"
    )
    client.close()


def _published(relay, count: int) -> None:
    """Wait until the relay has published `count` ids."""

    def done() -> bool:
        """the relay to publish the ids"""
        return relay.published >= count

    wait_for(done)


@pytest.fixture
def own_queue(make_app, settings) -> Iterator[Flask]:
    """An app whose commits are real (no test transaction around them) and whose relay
    publishes to a queue of the test's own, emptied afterwards."""
    queue_name = f"{settings.celery_queue}-commits-{uuid.uuid4().hex[:6]}"
    yield make_app(celery_queue=queue_name)
    _forget(queue_name)


# -- the commit boundary, with real commits -------------------------------------------------

# A key of PostgreSQL's advisory locks, and the request ids whose notification rows the
# test's trigger holds at commit, or refuses at commit.
GATE = 18_0001
HELD = "held-at-commit"
REFUSED = "refused-at-commit"


@pytest.fixture
def commit_gate(app, committed_sms) -> Iterator[Callable[[], Any]]:
    """A deferred trigger on notifications, fired when the transaction that wrote the row
    commits: for a row of request HELD it waits for the advisory lock GATE (the test holds
    it, so that commit stays under way); for one of request REFUSED it fails the commit, as a
    deferred constraint would. The fixture's value holds the gate: `with commit_gate(): ...`"""
    with app.app_context():
        db.session.execute(
            text(
                f"""
                CREATE FUNCTION test_commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF NEW.request_id = '{HELD}' THEN PERFORM pg_advisory_xact_lock({GATE});
                  ELSIF NEW.request_id = '{REFUSED}' THEN
                    RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation';
                  END IF;
                  RETURN NULL;
                END $$;
                CREATE CONSTRAINT TRIGGER test_commit_gate AFTER INSERT ON notifications
                  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_gate();
                """
            )
        )
        db.session.commit()

    @contextmanager
    def held() -> Iterator[None]:
        with psycopg.connect(_admin_dsn_of(app), autocommit=True) as gate:
            gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
            yield
            gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))

    try:
        yield held
    finally:
        with app.app_context():
            db.session.execute(text("DROP TRIGGER test_commit_gate ON notifications"))
            db.session.execute(text("DROP FUNCTION test_commit_gate()"))
            db.session.commit()


def _admin_dsn_of(app) -> str:
    url = make_url(app.config["SETTINGS"].database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _waiting_at_the_gate(app) -> bool:
    """A transaction's commit waits for the gate's lock"""
    with psycopg.connect(_admin_dsn_of(app), autocommit=True) as probe:
        waiting = probe.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid = %s",
            (GATE,),
        ).fetchone()[0]
    return waiting > 0


def _place(application, idp, request_id: str) -> dict[str, Any]:
    """jane's createOrder on `application`, with this request id; its answer."""
    response = application.test_client().post(
        "/graphql",
        json={"query": "mutation { createOrder(input: {price: 10}) { success order { id } } }"},
        headers={
            "Authorization": f"Bearer {idp.issue_access_token('jane')}",
            "X-Request-ID": request_id,
        },
    )
    return response.get_json()


def _notification_of(application, order_id: str) -> str:
    with application.app_context():
        try:
            return str(
                db.session.scalars(
                    select(Notification.id).where(Notification.order_id == order_id)
                ).one()
            )
        finally:
            db.session.remove()


# A caller seen for the first time is provisioned in the order's transaction; a known
# caller's order is its statement alone, committed as it ends.
CALLERS = pytest.mark.parametrize("known", [False, True], ids=["new-caller", "known-caller"])


def _known(application, idp) -> None:
    """jane's customer row, committed by a first request of hers."""
    response = application.test_client().post(
        "/graphql",
        json={"query": "{ me { id } }"},
        headers={"Authorization": f"Bearer {idp.issue_access_token('jane')}"},
    )
    assert response.get_json()["data"]["me"]["id"]


@CALLERS
def test_a_requests_sms_is_published_once_its_transaction_has_committed_not_before(
    own_queue, idp, commit_gate, known
):
    relay = own_queue.extensions["outbox_relay"]
    if known:
        _known(own_queue, idp)
    queue_name = relay.queue_name
    # The gate opens before the request's thread is waited for, whatever happens.
    with ThreadPoolExecutor(max_workers=1) as request, commit_gate():
        answer = request.submit(_place, own_queue, idp, HELD)
        wait_for(lambda: _waiting_at_the_gate(own_queue), timeout=60)  # written, committing

        before_commit = relayed(relay, queue_name)

    placed = answer.result()["data"]["createOrder"]
    notification_id = _notification_of(own_queue, placed["order"]["id"])
    assert placed["success"] is True
    assert before_commit == []  # nothing reached the broker while the commit was under way
    assert relayed(relay, queue_name).count(notification_id) == 1
    (task,) = publications_of(notification_id, queue_name)
    assert task["eta"] is None  # at once, not later


@CALLERS
def test_a_transaction_refused_at_commit_publishes_nothing(own_queue, idp, commit_gate, known):
    relay = own_queue.extensions["outbox_relay"]
    if known:
        _known(own_queue, idp)

    answer = _place(own_queue, idp, REFUSED)

    assert answer["data"] is None
    assert [error["extensions"]["code"] for error in answer["errors"]] == ["CONFLICT"]
    assert relayed(relay, relay.queue_name) == []
    with own_queue.app_context():
        assert db.session.scalar(select(func.count()).select_from(Notification)) == 0
        db.session.remove()


def test_an_id_written_in_a_savepoint_waits_for_the_real_commit(own_queue, committed_sms):
    relay = own_queue.extensions["outbox_relay"]
    with own_queue.app_context():
        session = db.session()
        order = OrderFactory(unit_price=Decimal("50.00"))  # committed: data setup
        with session.begin_nested():
            notification_id = str(_queue_one(session, order).id)

        after_the_savepoint = relayed(relay, relay.queue_name)
        session.commit()
        db.session.remove()

    assert notification_id not in after_the_savepoint
    assert relayed(relay, relay.queue_name).count(notification_id) == 1


def test_ids_of_a_rolled_back_transaction_are_never_published(own_queue, committed_sms):
    relay = own_queue.extensions["outbox_relay"]
    with own_queue.app_context():
        session = db.session()
        order = OrderFactory(unit_price=Decimal("50.00"))
        notification_id = str(_queue_one(session, order).id)
        session.flush()
        session.rollback()
        session.commit()  # a later commit of the session publishes nothing of it either
        db.session.remove()

    assert notification_id not in relayed(relay, relay.queue_name)


# -- batches --------------------------------------------------------------------------------


def test_ids_that_pile_up_are_all_published_in_batch_tasks_in_one_go(make_app):
    queue_name = f"relay-batch-{uuid.uuid4().hex[:8]}"
    relay = make_app(celery_queue=queue_name).extensions["outbox_relay"]
    ids = [uuid.uuid4() for _ in range(250)]  # more than one pipeline's worth

    relay.submit(ids)

    _published(relay, len(ids))
    tasks = published_tasks(queue_name)
    _forget(queue_name)
    assert {task["task"] for task in tasks} == {"notifications.send_batch"}
    published = [notification_id for task in tasks for notification_id in task["args"][0]]
    assert sorted(published) == sorted(str(i) for i in ids)  # each once, none lost
    assert max(len(task["args"][0]) for task in tasks) == outbox.TASK_BATCH
    assert len(tasks) <= 250 // outbox.TASK_BATCH + 5  # full batches, not one task per id


def test_an_id_left_over_from_a_full_task_still_goes_out_alone(make_app):
    """The id beyond a full task waits a gathering for company (see the next test); none
    comes, and it goes out by itself all the same, none lost or repeated."""
    queue_name = f"relay-carry-{uuid.uuid4().hex[:8]}"
    relay = make_app(celery_queue=queue_name).extensions["outbox_relay"]
    ids = [uuid.uuid4() for _ in range(outbox.TASK_BATCH + 1)]

    relay.submit(ids)  # and nothing after it

    _published(relay, len(ids))
    tasks = published_tasks(queue_name)[::-1]  # the list's head is the newest
    _forget(queue_name)
    assert [task["args"][0] for task in tasks] == [
        [str(i) for i in ids[:-1]],
        [str(ids[-1])],
    ]


def test_a_relay_keeps_the_ids_beyond_full_tasks_for_one_gathering_only():
    full = 2 * outbox.TASK_BATCH  # two full tasks, and three ids more
    ids = [str(n) for n in range(full + 3)]

    assert outbox._full_tasks(ids, 0) == (ids[:full], ids[full:])
    assert outbox._full_tasks(ids[:3], 0) == ([], ids[:3])  # alone: wait once for company
    assert outbox._full_tasks(ids[:3], 3) == (ids[:3], [])  # waited already: go
    assert outbox._full_tasks(ids, 3) == (ids[:full], ids[full:])  # the carried are in the tasks
    assert outbox._full_tasks(ids[:full], 0) == (ids[:full], [])


def _metric(app, series: str) -> float:
    """A series as GET /metrics shows it (0 before its first count)."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " ")
    )


def test_ids_dropped_while_redis_is_down_are_counted_and_the_sweep_publishes_them(
    app, make_app, session, idp, task_queue
):
    down = make_app(redis_url="redis://127.0.0.1:1/0")  # nothing listens there
    dropped = 'sms_relay_dropped_total{reason="broker_down"}'
    before = _metric(down, dropped)
    jane = GraphQLClient(down.test_client(), idp.issue_access_token("jane"))

    placed = jane.execute("mutation { createOrder(input: {price: 10}) { order { id } } }")

    wait_for(lambda: _metric(down, dropped) > before, timeout=30)  # redis-py tries 8 s
    assert _metric(down, dropped) == before + 1
    notification_id = session.scalars(
        select(Notification.id).where(Notification.order_id == placed["createOrder"]["order"]["id"])
    ).one()
    assert publications_of(notification_id, task_queue) == []

    # Past the sweep's grace, as if Redis had been down for two minutes.
    set_row(session, notification_id, "next_attempt_at = clock_timestamp() - interval '2 minutes'")
    with bound(app):
        assert sweep()["republished"] == 1

    assert len(publications_of(notification_id, task_queue)) == 1


def test_a_relay_stopped_by_an_unexpected_error_starts_again_and_publishes(caplog):
    queue_name = f"relay-restart-{uuid.uuid4().hex[:8]}"
    # The first broker client is set up wrong (a pool size that is no number): using it raises
    # ValueError, which no broker outage does. The next one is as the relay makes them.
    clients = [kombu.Connection(REDIS_URL, transport_options={"max_connections": "many"})]
    broker = Celery("tests", broker=REDIS_URL, set_as_current=False)
    relay = outbox.Relay(
        broker,
        queue_name,
        connect=lambda: clients.pop() if clients else broker.connection_for_write(),
    )

    def restarts() -> float:
        return REGISTRY.get_sample_value("sms_relay_restarts_total") or 0.0

    def dropped() -> float:
        series = ("sms_relay_dropped_total", {"reason": "relay_error"})
        return REGISTRY.get_sample_value(*series) or 0.0

    restarted, lost = restarts(), dropped()
    held, later = uuid.uuid4(), uuid.uuid4()
    with caplog.at_level(logging.ERROR, logger="models.outbox"):
        relay.submit([held])
        wait_for(lambda: restarts() > restarted, timeout=10)
        relay.submit([later])
        _published(relay, 1)

    tasks = published_tasks(queue_name)
    _forget(queue_name)
    assert [task["args"][0] for task in tasks] == [[str(later)]]  # the held one: the sweep's
    assert restarts() == restarted + 1
    assert dropped() == lost + 1
    (record,) = [r for r in caplog.records if r.name == "models.outbox"]
    assert record.levelno == logging.ERROR
    assert record.exc_info[0] is ValueError


def test_redis_going_away_under_a_connected_relay_is_an_outage_not_an_error(caplog):
    """Redis dies after the relay connected: kombu reports the failed pipelined publish as its
    own BatchPublishError, caused by the connection error. That is Redis being away, as the
    runbook reads the metrics: counted as broker_down, with no restart and no ERROR."""
    port = _free_port()
    server = _redis_server(port)
    url = f"redis://127.0.0.1:{port}/0"
    broker = Celery("tests", broker=url, set_as_current=False)
    relay = outbox.Relay(broker, f"relay-outage-{uuid.uuid4().hex[:8]}")

    def series(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    try:
        relay.submit([uuid.uuid4()])
        _published(relay, 1)  # connected, and its connection is live
        server.kill()
        server.wait()
        down = series("sms_relay_dropped_total", reason="broker_down")
        failed = series("sms_relay_dropped_total", reason="relay_error")
        restarts = series("sms_relay_restarts_total")
        with caplog.at_level(logging.WARNING, logger="models.outbox"):
            relay.submit([uuid.uuid4()])
            wait_for(lambda: [r for r in caplog.records if r.name == "models.outbox"])
    finally:
        if server.poll() is None:
            server.kill()

    assert series("sms_relay_dropped_total", reason="broker_down") == down + 1
    assert series("sms_relay_dropped_total", reason="relay_error") == failed
    assert series("sms_relay_restarts_total") == restarts
    assert [r.levelno for r in caplog.records if r.name == "models.outbox"] == [logging.WARNING]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (Debian's redis-server package)"
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    wait_for(lambda: _answers(client), timeout=10)
    client.close()
    return server


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
