"""Orders: the tables, the state machine and the operations on it.

Every state change is a conditional UPDATE (`... WHERE status = 'NEW'`), so concurrent
requests cannot both win; each change appends an `OrderEvent` in the same transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.actors import Actor
from models.customers import Customer
from models.db import Timestamp, UpdatedTimestamp, UUIDPrimaryKey, db
from models.errors import DomainError, ErrorCode, ErrorCollector
from models.messages import message_body
from models.notifications import NotificationKind, NotificationStatus, publish_after_commit
from models.pagination import Page, paginate
from models.validation import (
    MAX_DETAILS,
    MAX_ITEM,
    MAX_SUBJECT,
    clean_text,
    parse_choice,
    parse_uuid,
)


class OrderStatus(StrEnum):
    NEW = "NEW"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class OrderEventType(StrEnum):
    CREATED = "CREATED"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class Order(db.Model):
    __tablename__ = "orders"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy reads a dict
    __table_args__ = (
        CheckConstraint("status IN ('NEW', 'CONFIRMED', 'CANCELLED')", name="status"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price > 0 AND total > 0", name="amounts_positive"),
        # A customer's order list, with and without a status filter, stays an index range
        # scan at any size: newest first, keyset on (created_at, id).
        Index("ix_orders_customer_recent", "customer_id", "created_at", "id"),
        Index("ix_orders_customer_status_recent", "customer_id", "status", "created_at", "id"),
        Index("ix_orders_recent", "created_at", "id"),
        Index("ix_orders_status_recent", "status", "created_at", "id"),
    )

    id: Mapped[UUIDPrimaryKey]
    customer_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("customers.id", ondelete="RESTRICT")
    )
    item: Mapped[str | None] = mapped_column(String(MAX_ITEM))
    details: Mapped[str | None] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3), server_default="KES")
    status: Mapped[str] = mapped_column(String(16), server_default=OrderStatus.NEW.value)
    created_by: Mapped[str] = mapped_column(String(MAX_SUBJECT))
    created_at: Mapped[Timestamp]
    updated_at: Mapped[UpdatedTimestamp]

    customer: Mapped[Customer] = relationship(lazy="raise_on_sql")


class OrderEvent(db.Model):
    """Append-only history of an order: who did what, when."""

    __tablename__ = "order_events"
    __table_args__ = (Index("ix_order_events_order", "order_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(MAX_SUBJECT))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[Timestamp]

    # Declared so the unit of work inserts the order before its events.
    order: Mapped[Order] = relationship(lazy="raise_on_sql")


def change_parameters(
    session: Session,
    *,
    actor: Actor,
    order_id: uuid.UUID,
    event: OrderEventType,
    data: dict[str, Any],
    notify: NotificationKind,
    company: str,
    total: Decimal,
    currency: str,
) -> dict[str, Any]:
    """The parameters of an order change's event and QUEUED notification, as
    `models.placing.PLACE_ORDER` and _RECORD_CHANGE write them (once written, hand
    `notification_id` to the relay)."""
    return {
        "event_type": event.value,
        "subject": actor.subject,
        "event_data": json.dumps(data),
        "notification_id": uuid.uuid4(),
        "kind": notify.value,
        "body": message_body(
            notify, company=company, order_id=order_id, total=total, currency=currency
        ),
        "notification_status": NotificationStatus.QUEUED.value,
        "request_id": session.info.get("request_id"),
    }


def _order_id(value: object, field: str = "orderId") -> uuid.UUID:
    key = parse_uuid(value)
    if key is None:
        raise DomainError.single(field, ErrorCode.INVALID, f"{field} is not a valid order id")
    return key


def get_order(session: Session, *, actor: Actor, order_id: object, field: str = "orderId") -> Order:
    """The order with this id, if the actor may see it (else NOT_FOUND, never FORBIDDEN);
    errors name `field`, the argument the client gave the id in."""
    order = session.get(Order, _order_id(order_id, field))
    if order is None or not actor.may_see(order.customer_id):
        raise DomainError.single(field, ErrorCode.NOT_FOUND, "order not found")
    return order


# One conditional UPDATE moves an order, so of concurrent changes exactly one wins: any order
# for an admin, the caller's own for a customer (`Actor.may_see`). An order this request read
# before shows its new status (populate_existing). Built once: building a statement and its
# cache key costs more CPU than running it.
def _moving_order(*conditions: Any) -> Any:
    return (
        update(Order)
        .where(
            Order.id == bindparam("order_id"),
            Order.status.in_(bindparam("allowed_from", expanding=True)),
            *conditions,
        )
        .values(status=bindparam("to"), updated_at=func.clock_timestamp())
        .returning(Order)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


_MOVE_ANY_ORDER = _moving_order()
_MOVE_OWN_ORDER = _moving_order(Order.customer_id == bindparam("own_customer_id"))
# A change's event and its QUEUED notification (to the customer's phone) in one statement:
# ORM objects flushed by the unit of work would be two statements and cost more CPU than the
# rest of the change.
_RECORD_CHANGE = text(
    """
    WITH event AS (
        INSERT INTO order_events (order_id, type, actor, data)
        VALUES (:order_id, :event_type, :subject, CAST(:event_data AS jsonb))
    )
    INSERT INTO notifications (id, order_id, kind, phone, body, status, attempts, request_id)
    SELECT :notification_id, :order_id, :kind, phone, :body, :notification_status, 0,
           :request_id
    FROM customers WHERE id = :customer_id
    """
).execution_options(writes=True)


def _transition(
    session: Session,
    *,
    actor: Actor,
    order_id: object,
    allowed_from: tuple[OrderStatus, ...],
    to: OrderStatus,
    event: OrderEventType,
    data: dict[str, Any],
    notify: NotificationKind,
    company: str,
    admins_also_from: tuple[OrderStatus, ...] = (),
) -> Order:
    key = _order_id(order_id)
    if actor.is_admin:
        allowed_from += admins_also_from
    moved = _MOVE_ANY_ORDER if actor.is_admin else _MOVE_OWN_ORDER
    parameters = {
        "order_id": key,
        "allowed_from": [status.value for status in allowed_from],
        "to": to.value,
        "own_customer_id": actor.customer_id,
    }
    order = session.scalars(moved, parameters).one_or_none()
    if order is None:
        current = get_order(session, actor=actor, order_id=key)
        # A customer refused what an admin may do is told whom to ask.
        rule = (
            f"a {current.status} order is {to.lower()} by an admin"
            if current.status in admins_also_from and not actor.is_admin
            else f"only a {' or '.join(allowed_from)} order can be {to.lower()}"
        )
        raise DomainError.single(
            "orderId", ErrorCode.INVALID_STATE, f"order is {current.status}; {rule}"
        )
    change = change_parameters(
        session,
        actor=actor,
        order_id=order.id,
        event=event,
        data=data,
        notify=notify,
        company=company,
        total=order.total,
        currency=order.currency,
    )
    session.execute(
        _RECORD_CHANGE, {**change, "order_id": order.id, "customer_id": order.customer_id}
    )
    publish_after_commit(session, change["notification_id"])
    return order


def confirm_order(session: Session, *, actor: Actor, order_id: object, company: str) -> Order:
    """NEW -> CONFIRMED; exactly one of any number of concurrent confirms succeeds."""
    return _transition(
        session,
        actor=actor,
        order_id=order_id,
        allowed_from=(OrderStatus.NEW,),
        to=OrderStatus.CONFIRMED,
        event=OrderEventType.CONFIRMED,
        data={},
        notify=NotificationKind.ORDER_CONFIRMED,
        company=company,
    )


def cancel_order(
    session: Session,
    *,
    actor: Actor,
    order_id: object,
    reason: str | None = None,
    company: str,
) -> Order:
    """NEW or CONFIRMED -> CANCELLED, with an optional reason kept in the order's history.

    An admin may cancel a CONFIRMED order; a customer may cancel only its own NEW ones.
    """
    errors = ErrorCollector()
    reason = clean_text(errors, "reason", reason, limit=MAX_DETAILS)
    errors.raise_if_any()
    return _transition(
        session,
        actor=actor,
        order_id=order_id,
        allowed_from=(OrderStatus.NEW,),
        admins_also_from=(OrderStatus.CONFIRMED,),
        to=OrderStatus.CANCELLED,
        event=OrderEventType.CANCELLED,
        data={"reason": reason} if reason else {},
        notify=NotificationKind.ORDER_CANCELLED,
        company=company,
    )


def list_orders(
    session: Session,
    *,
    actor: Actor,
    customer: Customer | None = None,
    status: str | None = None,
    status_in: Collection[str] | None = None,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Page[Order]:
    """Orders newest first, optionally of one customer, of the status `status` names (any
    letter case) and of the statuses `status_in` lists (both filters apply when both are
    given; an empty list matches none), as the actor may see them; paged as `paginate` does."""
    wanted = parse_choice(OrderStatus, status)
    query = select(Order)
    if customer is not None:
        query = query.where(Order.customer_id == customer.id)
    query = query.where(actor.sees(Order.customer_id))
    if wanted is not None:
        query = query.where(Order.status == wanted.value)
    if status_in is not None:
        query = query.where(Order.status.in_([OrderStatus(each).value for each in status_in]))
    return paginate(
        session,
        query,
        created_at=Order.created_at,
        row_id=Order.id,
        first=first,
        after=after,
        last=last,
        before=before,
    )
