"""factory_boy factories that insert rows directly, for tests not about creating them.

They write through `db.session`, which the `session` fixture swaps for its rolled-back
session; each create commits, which inside that fixture only releases a savepoint, so the
rows survive a request that ends without committing and vanish when the test ends.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import factory
from sqlalchemy import text
from sqlalchemy.orm import Session

from models import Customer, Order
from models.db import db
from models.messages import message_body
from models.notifications import (
    Notification,
    NotificationKind,
    NotificationStatus,
    publish_after_commit,
)
from models.orders import OrderStatus


class CustomerFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = Customer
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731 - read at create time
        sqlalchemy_session_persistence = "commit"

    id = factory.LazyFunction(uuid.uuid4)
    code = factory.Sequence(lambda n: f"FACT{n:05d}")
    name = factory.Faker("name")
    phone = factory.Sequence(lambda n: f"+2547{n % 100_000_000:08d}")
    email = factory.LazyAttribute(lambda customer: f"{customer.code.lower()}@example.com")


class OrderFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = Order
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731 - read at create time
        sqlalchemy_session_persistence = "commit"

    id = factory.LazyFunction(uuid.uuid4)
    customer = factory.SubFactory(CustomerFactory)
    item = factory.Sequence(lambda n: f"Item {n}")
    details = None
    quantity = 1
    unit_price = Decimal("100.00")
    total = factory.LazyAttribute(lambda order: order.unit_price * order.quantity)
    currency = "KES"
    status = OrderStatus.NEW.value
    created_by = factory.LazyAttribute(lambda order: order.customer.oidc_subject or "factory")


JANE_SUB = "2c95d280-3560-4991-af5d-d592b6982eb4"
ADMIN_SUB = "400e2c45-bf9b-4c22-b306-aaefdbbedeb0"
TABLES = ("customers", "orders", "order_events", "idempotency_keys")


def row_counts(session, tables: tuple[str, ...] = TABLES) -> dict[str, int]:
    """How many rows each table holds, to show that a refused request wrote nothing."""
    return {
        table: session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
        for table in tables
    }


@dataclass(frozen=True)
class OutboxMessage:
    """A notification to queue directly, as an order change would."""

    order_id: uuid.UUID
    kind: NotificationKind
    phone: str | None
    total: Decimal
    currency: str


def enqueue(session: Session, message: OutboxMessage, *, company: str) -> Notification:
    """A QUEUED notification written in the caller's transaction and handed to the outbox
    relay after the commit, as the order changes in `models.orders` write theirs."""
    notification = Notification(
        id=uuid.uuid4(),
        order_id=message.order_id,
        kind=message.kind.value,
        phone=message.phone,
        body=message_body(
            message.kind,
            company=company,
            order_id=message.order_id,
            total=message.total,
            currency=message.currency,
        ),
        status=NotificationStatus.QUEUED.value,
        attempts=0,
        request_id=session.info.get("request_id"),
    )
    session.add(notification)
    publish_after_commit(session, notification.id)
    return notification
