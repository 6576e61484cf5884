"""Placing an order (createOrder): the checks of its input, its idempotency key, and the one
statement that writes the order with its event and its SMS."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from models.actors import Actor
from models.customers import customer_for_order
from models.errors import ErrorCode, ErrorCollector
from models.idempotency import IDEMPOTENCY_TTL, check_key, earlier_order_id, fingerprint
from models.notifications import NotificationKind, publish_after_commit
from models.orders import Order, OrderEventType, OrderStatus, change_parameters
from models.validation import (
    MAX_DETAILS,
    MAX_ITEM,
    MAX_QUANTITY,
    clean_currency,
    clean_money,
    clean_text,
)

# One round trip places an order: the idempotency claim, the order, its CREATED event and the
# QUEUED notification (the outbox) are written by one statement, compiled once; as ORM objects
# flushed by the unit of work they would be five statements and cost far more CPU. Without a
# key the claim is skipped. With one, INSERT ... ON CONFLICT waits for a concurrent claimant
# to commit, so of two concurrent duplicates exactly one inserts and the other returns no row;
# an expired claim is taken over. Foreign keys are checked at the end of the statement, when
# the order the claim points at exists.
PLACE_ORDER = text(
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
).columns(*Order.__table__.columns)
# The order it placed, loaded as the ORM loads any (built once, as `models.orders` builds its
# statements).
_PLACED_ORDER = select(Order).from_statement(PLACE_ORDER).execution_options(writes=True)


@dataclass(frozen=True)
class OrderResult:
    """The order a create produced, and whether it was replayed from an idempotency key."""

    order: Order
    replayed: bool = False


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
    company: str,
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
    check_key(errors, "idempotencyKey", idempotency_key)
    errors.raise_if_any()
    assert amount is not None  # guaranteed by the checks above
    assert total is not None

    customer_key = customer_for_order(
        session, actor=actor, customer_id=customer_id, customer_code=customer_code, user_id=user_id
    )
    request_hash = None
    if idempotency_key is not None:
        request_hash = fingerprint(
            [str(customer_key), item, details, quantity, str(amount), currency]
        )

    order_id = uuid.uuid4()
    change = change_parameters(
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
    placed = session.scalars(_PLACED_ORDER, parameters).one_or_none()
    if placed is not None:
        publish_after_commit(session, change["notification_id"])
        return OrderResult(order=placed)

    assert idempotency_key is not None  # without a key the order is always placed
    assert request_hash is not None
    earlier = earlier_order_id(
        session, subject=actor.subject, key=idempotency_key, request=request_hash
    )
    return OrderResult(order=session.get_one(Order, earlier), replayed=True)
