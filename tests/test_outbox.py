"""The outbox relay publishes a notification's id only once the transaction that wrote the
row has committed: a worker must never be handed an id it cannot see yet."""

from __future__ import annotations

import time
from decimal import Decimal

from models.notifications import NotificationKind, OutboxMessage, enqueue
from tests.factories import OrderFactory


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
    before = relay.published

    with session.begin_nested():
        _queue_one(session, order)
    released = _published_within(relay, before + 1, 0.3)

    session.commit()

    assert not released, "published when the savepoint was released, before the commit"
    assert _published_within(relay, before + 1, 5)


def test_ids_of_a_rolled_back_transaction_are_never_published(app, session):
    relay = app.extensions["outbox_relay"]
    order = OrderFactory(unit_price=Decimal("50.00"))
    before = relay.published

    _queue_one(session, order)
    session.rollback()
    session.commit()

    assert not _published_within(relay, before + 1, 0.3)
