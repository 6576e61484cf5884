"""The outbox relay publishes a notification's id only once the transaction that wrote the
row has committed: a worker must never be handed an id it cannot see yet."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import redis

from models.notifications import NotificationKind
from tests.conftest import REDIS_URL
from tests.factories import OrderFactory, OutboxMessage, enqueue
from tests.sms_support import published_tasks
from worker import outbox


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


def _settled_count(relay) -> int:
    """How many the relay has published, once the ids of earlier tests have gone out."""
    last = -1
    while relay.published != last:
        last = relay.published
        time.sleep(outbox.GATHER_SECONDS * 3)
    return last


def _forget(queue_name: str) -> None:
    """Delete a test's queue and the bindings kombu keeps for it."""
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(
        queue_name, f"_kombu.binding.{queue_name}", f"_kombu.binding_permanent.{queue_name}"
    )
    client.close()


def _published_within(relay, count: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if relay.published >= count:
            return True
        time.sleep(0.02)
    return relay.published >= count


def test_an_id_written_in_a_savepoint_waits_for_the_real_commit(app, session):
    relay = app.extensions["outbox_relay"]
    order = OrderFactory(unit_price=Decimal("50.00"))
    before = _settled_count(relay)

    with session.begin_nested():
        _queue_one(session, order)
    released = _published_within(relay, before + 1, 0.3)

    session.commit()

    assert not released, "published when the savepoint was released, before the commit"
    assert _published_within(relay, before + 1, 5)


def test_ids_of_a_rolled_back_transaction_are_never_published(app, session):
    relay = app.extensions["outbox_relay"]
    order = OrderFactory(unit_price=Decimal("50.00"))
    before = _settled_count(relay)

    _queue_one(session, order)
    session.rollback()
    session.commit()

    assert not _published_within(relay, before + 1, 0.3)


def test_ids_that_pile_up_are_all_published_in_batch_tasks_in_one_go(make_app):
    queue_name = f"relay-batch-{uuid.uuid4().hex[:8]}"
    relay = make_app(celery_queue=queue_name).extensions["outbox_relay"]
    ids = [uuid.uuid4() for _ in range(250)]  # more than one pipeline's worth

    relay.submit(ids)

    assert _published_within(relay, len(ids), 10)
    tasks = published_tasks(queue_name)
    _forget(queue_name)
    assert {task["task"] for task in tasks} == {"notifications.send_batch"}
    published = [notification_id for task in tasks for notification_id in task["args"][0]]
    assert sorted(published) == sorted(str(i) for i in ids)  # each once, none lost
    assert max(len(task["args"][0]) for task in tasks) == outbox.TASK_BATCH
    assert len(tasks) <= 250 // outbox.TASK_BATCH + 5  # full batches, not one task per id


def test_an_id_left_over_from_a_full_task_still_goes_out_alone_soon(make_app):
    """The id beyond a full task waits a gathering for company (see the next test); none
    comes, and it goes out by itself within two gatherings, none lost or repeated."""
    queue_name = f"relay-carry-{uuid.uuid4().hex[:8]}"
    relay = make_app(celery_queue=queue_name).extensions["outbox_relay"]
    ids = [uuid.uuid4() for _ in range(outbox.TASK_BATCH + 1)]

    started = time.monotonic()
    relay.submit(ids)
    assert _published_within(relay, len(ids), 5)
    waited = time.monotonic() - started

    tasks = published_tasks(queue_name)[::-1]  # the list's head is the newest
    _forget(queue_name)
    assert [task["args"][0] for task in tasks] == [
        [str(i) for i in ids[:-1]],
        [str(ids[-1])],
    ]
    assert waited < 2 * outbox.GATHER_SECONDS + 1  # two gatherings and a publish at most


def test_a_relay_keeps_the_ids_beyond_full_tasks_for_one_gathering_only():
    full = 2 * outbox.TASK_BATCH  # two full tasks, and three ids more
    ids = [str(n) for n in range(full + 3)]

    assert outbox._full_tasks(ids, 0) == (ids[:full], ids[full:])
    assert outbox._full_tasks(ids[:3], 0) == ([], ids[:3])  # alone: wait once for company
    assert outbox._full_tasks(ids[:3], 3) == (ids[:3], [])  # waited already: go
    assert outbox._full_tasks(ids, 3) == (ids[:full], ids[full:])  # the carried are in the tasks
    assert outbox._full_tasks(ids[:full], 0) == (ids[:full], [])
