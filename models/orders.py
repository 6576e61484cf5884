"""Orders: the tables, the state machine and the operations on it.

Every state change is a conditional UPDATE (`... WHERE status = 'NEW'`), so concurrent
requests cannot both win; each change appends an `OrderEvent` in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
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
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import Row
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.actors import Actor
from models.customers import Customer, find_customer
from models.db import Timestamp, UpdatedTimestamp, UUIDPrimaryKey, db, one_statement
from models.errors import DomainError, ErrorCode, ErrorCollector
from models.notifications import (
    NotificationKind,
    NotificationStatus,
    message_body,
    publish_after_commit,
)
from models.pagination import Page, paginate
from models.validation import (
    MAX_DETAILS,
    MAX_ITEM,
    MAX_QUANTITY,
    MAX_SUBJECT,
    clean_currency,
    clean_money,
    clean_text,
    parse_uuid,
    storable,
)

IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255


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


class IdempotencyKey(db.Model):
    """A createOrder key, scoped to the caller, remembered for 24 hours."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_IDEMPOTENCY_KEY), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="CASCADE")
    )
    created_at: Mapped[Timestamp]


# One round trip places an order: the idempotency claim, the order, its CREATED event and the
# QUEUED notification (the outbox) are written by one statement, compiled once. Without a key
# the claim is skipped. With one, INSERT ... ON CONFLICT waits for a concurrent claimant to
# commit, so of two concurrent duplicates exactly one inserts and the other returns no row;
# an expired claim is taken over. Foreign keys are checked at the end of the statement, when
# the order the claim points at exists.
# Its row is answered as it is, not loaded into an Order: the ORM's loading and identity map
# cost more CPU than the rest of the statement's execution, for a row only read.
PLACE_ORDER = (
    text(
        """
    WITH claim AS (
        INSERT INTO idempotency_keys (subject, key, request_hash, order_id)
        SELECT :subject, :key, :request_hash, :order_id
        WHERE CAST(:key AS varchar) IS NOT NULL
        ON CONFLICT (subject, key) DO UPDATE
            SET request_hash = excluded.request_hash,
                order_id = excluded.order_id,
                created_at = now()
            WHERE idempotency_keys.created_at < now() - CAST(:ttl AS interval)
        RETURNING order_id
    ), placed AS (
        INSERT INTO orders (id, customer_id, item, details, quantity, unit_price, total,
                            currency, status, created_by)
        SELECT :order_id, :customer_id, :item, :details, :quantity, :unit_price, :total,
               :currency, :status, :subject
        WHERE CAST(:key AS varchar) IS NULL OR EXISTS (SELECT FROM claim)
        RETURNING *
    ), event AS (
        INSERT INTO order_events (order_id, type, actor, data)
        SELECT id, :event_type, :subject, CAST(:event_data AS jsonb) FROM placed
    ), notification AS (
        INSERT INTO notifications (id, order_id, kind, phone, body, status, attempts, request_id)
        SELECT :notification_id, placed.id, :kind, customers.phone, :body,
               :notification_status, 0, :request_id
        FROM placed JOIN customers ON customers.id = placed.customer_id
    )
    SELECT * FROM placed
    """
    )
    .columns(*Order.__table__.columns)  # typed: its result is mapped once, not per call
    .execution_options(writes=True)
)


@dataclass(frozen=True)
class OrderResult:
    """The order a create produced, and whether it was replayed from an idempotency key.

    A new order is the row as written (its columns read as attributes, like an Order's); a
    replayed one is the Order loaded.
    """

    order: Order | Row[Any]
    replayed: bool = False


def _change_parameters(
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
    """The parameters of an order change's event and QUEUED notification, as PLACE_ORDER and
    _RECORD_CHANGE write them (once written, hand `notification_id` to the relay)."""
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


def parse_status(value: str | None, field: str = "status") -> OrderStatus | None:
    """An order status from any letter case; a DomainError (INVALID) if there is none such."""
    if value is None or not value.strip():
        return None
    try:
        return OrderStatus(value.strip().upper())
    except ValueError:
        names = ", ".join(status.value for status in OrderStatus)
        raise DomainError.single(
            field, ErrorCode.INVALID, f"{field} must be one of {names}"
        ) from None


def _resolve_customer(
    session: Session,
    actor: Actor,
    *,
    customer_id: str | None,
    customer_code: str | None,
    user_id: str | None,
) -> uuid.UUID:
    given = [
        (field, value)
        for field, value in (
            ("customerId", customer_id),
            ("customerCode", customer_code),
            ("userId", user_id),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise DomainError.single(
            given[1][0],
            ErrorCode.INVALID,
            "name the customer once: customerId, customerCode or userId",
        )
    field, value = given[0] if given else ("customerId", None)
    if value is None or (field == "userId" and value.strip() == actor.subject):
        # The caller itself: its customer was provisioned when the request authenticated.
        if actor.customer_id is None:
            raise DomainError.single("customerId", ErrorCode.INVALID, "customerId is required")
        return actor.customer_id
    if field == "customerId" and parse_uuid(value) is None:
        raise DomainError.single(field, ErrorCode.INVALID, "customerId is not a valid id")
    return find_customer(session, actor=actor, reference=value.strip(), field=field).id


def _earlier_claim(session: Session, *, subject: str, key: str) -> IdempotencyKey:
    return session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.subject == subject, IdempotencyKey.key == key)
    ).one()


@one_statement
def create_order(
    session: Session,
    *,
    actor: Actor,
    customer_id: str | None = None,
    customer_code: str | None = None,
    user_id: str | None = None,
    item: str | None = None,
    details: str | None = None,
    quantity: int | None = None,
    unit_price: object = None,
    price: object = None,
    currency: str | None = None,
    idempotency_key: str | None = None,
    default_currency: str = "KES",
    company: str = "Donfiles",
) -> OrderResult:
    """Place an order for a customer the actor may order for; status NEW.

    `price` (the original API's field) is the total of a single item; `unit_price` with
    `quantity` is the richer form. With `idempotency_key`, a repeat of the same request
    returns the first order and creates nothing. Its writes are one statement, PLACE_ORDER.
    """
    errors = ErrorCollector()
    item = clean_text(errors, "item", item, limit=MAX_ITEM)
    details = clean_text(errors, "orderDetails", details, limit=MAX_DETAILS)
    currency = clean_currency(errors, "currency", currency, default_currency)
    if quantity is None:
        quantity = 1
    elif not 1 <= quantity <= MAX_QUANTITY:
        errors.add("quantity", ErrorCode.INVALID, f"quantity must be 1 to {MAX_QUANTITY:,}")
    if price is not None and unit_price is not None:
        errors.add("price", ErrorCode.INVALID, "give price or unitPrice, not both")
    elif price is None and unit_price is None:
        errors.add("unitPrice", ErrorCode.INVALID, "unitPrice (or price) is required")
    elif price is not None and quantity != 1:
        errors.add("price", ErrorCode.INVALID, "price is a total: use unitPrice with quantity")
    amount = clean_money(
        errors,
        "price" if price is not None else "unitPrice",
        price if price is not None else unit_price,
    )
    total = amount * quantity if amount is not None else None
    if total is not None and total > Decimal("1000000000"):
        errors.add("quantity", ErrorCode.INVALID, "the order total must be at most 1,000,000,000")
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            errors.add(
                "idempotencyKey", ErrorCode.INVALID, "idempotencyKey must be 1 to 255 characters"
            )
        elif not storable(idempotency_key):
            errors.add(
                "idempotencyKey",
                ErrorCode.INVALID,
                "idempotencyKey must be valid Unicode text without NUL characters",
            )
    errors.raise_if_any()
    assert amount is not None  # guaranteed by the checks above
    assert total is not None

    customer_key = _resolve_customer(
        session, actor, customer_id=customer_id, customer_code=customer_code, user_id=user_id
    )
    request_hash = None
    if idempotency_key is not None:
        fingerprint = json.dumps(
            [str(customer_key), item, details, quantity, str(amount), currency],
            separators=(",", ":"),
        )
        request_hash = hashlib.sha256(fingerprint.encode()).hexdigest()

    order_id = uuid.uuid4()
    change = _change_parameters(
        session,
        actor=actor,
        order_id=order_id,
        event=OrderEventType.CREATED,
        data={"total": str(total), "currency": currency},
        notify=NotificationKind.ORDER_PLACED,
        company=company,
        total=total,
        currency=currency,
    )
    parameters = {
        **change,
        "key": idempotency_key,
        "request_hash": request_hash,
        "ttl": IDEMPOTENCY_TTL,
        "order_id": order_id,
        "customer_id": customer_key,
        "item": item,
        "details": details,
        "quantity": quantity,
        "unit_price": amount,
        "total": total,
        "currency": currency,
        "status": OrderStatus.NEW.value,
    }
    placed = session.execute(PLACE_ORDER, parameters).one_or_none()
    if placed is not None:
        publish_after_commit(session, change["notification_id"])
        return OrderResult(order=placed)

    assert idempotency_key is not None  # without a key the order is always placed
    earlier = _earlier_claim(session, subject=actor.subject, key=idempotency_key)
    if earlier.request_hash != request_hash or earlier.order_id is None:
        raise DomainError.single(
            "idempotencyKey",
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this idempotencyKey was used for a different order",
        )
    return OrderResult(order=session.get_one(Order, earlier.order_id), replayed=True)


def purge_expired_idempotency_keys(session: Session, *, limit: int = 5000) -> int:
    """Forget idempotency keys older than 24 hours; returns how many went."""
    expired = (
        select(IdempotencyKey.subject, IdempotencyKey.key)
        .where(IdempotencyKey.created_at < func.now() - IDEMPOTENCY_TTL)
        .limit(limit)
    )
    result = session.execute(
        delete(IdempotencyKey).where(
            tuple_(IdempotencyKey.subject, IdempotencyKey.key).in_(expired)
        )
    )
    return result.rowcount  # type: ignore[attr-defined]


def _order_id(value: object, field: str = "orderId") -> uuid.UUID:
    key = parse_uuid(value)
    if key is None:
        raise DomainError.single(field, ErrorCode.INVALID, f"{field} is not a valid order id")
    return key


def get_order(session: Session, *, actor: Actor, order_id: object, field: str = "orderId") -> Order:
    """The order with this id, if the actor may see it (else NOT_FOUND, never FORBIDDEN);
    errors name `field`, the argument the client gave the id in."""
    order = session.get(Order, _order_id(order_id, field))
    if order is None or not (actor.is_admin or order.customer_id == actor.customer_id):
        raise DomainError.single(field, ErrorCode.NOT_FOUND, "order not found")
    return order


# A state change moves the order with one conditional UPDATE (the caller's own order, or any
# for an admin), then writes its event and its QUEUED notification with one statement. Built
# once; the notification's phone is the customer row's.
def _moving_order(*conditions: Any) -> Any:
    return (
        select(Order)
        .from_statement(
            update(Order.__table__)
            .where(
                Order.id == bindparam("order_id"),
                Order.status.in_(bindparam("allowed_from", expanding=True)),
                *conditions,
            )
            .values(status=bindparam("to"), updated_at=func.clock_timestamp())
            .returning(*Order.__table__.columns)
        )
        .execution_options(populate_existing=True, writes=True)
    )


_MOVE_ANY_ORDER = _moving_order()
_MOVE_OWN_ORDER = _moving_order(Order.customer_id == bindparam("own_customer_id"))
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
    allowed = [status.value for status in allowed_from]
    if actor.is_admin:
        moved = session.scalars(
            _MOVE_ANY_ORDER, {"order_id": key, "allowed_from": allowed, "to": to.value}
        )
    else:
        moved = session.scalars(
            _MOVE_OWN_ORDER,
            {
                "order_id": key,
                "allowed_from": allowed,
                "to": to.value,
                "own_customer_id": actor.customer_id,
            },
        )
    order = moved.one_or_none()
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
    change = _change_parameters(
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


def confirm_order(
    session: Session, *, actor: Actor, order_id: object, company: str = "Donfiles"
) -> Order:
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
    company: str = "Donfiles",
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
    wanted = parse_status(status)
    query = select(Order)
    if customer is not None:
        query = query.where(Order.customer_id == customer.id)
    if not actor.is_admin:
        query = query.where(Order.customer_id == actor.customer_id)
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
