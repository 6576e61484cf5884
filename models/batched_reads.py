"""Reads that a list of rows needs per row (each order's customer, events and notifications,
each notification's attempts), made for every such row the session holds at once: one round
trip for a page of a hundred orders instead of a hundred.

The rows come from the session's identity map, which holds what this request has read; each
read applies the same visibility rule as its one-row form, so nothing is loaded for a row the
actor may not see, and what is loaded is handed out only through those one-row reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session, undefer

from models.actors import Actor
from models.customers import Customer
from models.notifications import Notification, NotificationAttempt
from models.orders import Order, OrderEvent

T = TypeVar("T")


def held(session: Session, kind: type[T]) -> list[T]:
    """The rows of `kind` this session has read."""
    return [row for row in session.identity_map.values() if isinstance(row, kind)]


def _visible_orders(actor: Actor, orders: Iterable[Order]) -> list[Order]:
    return [order for order in orders if actor.may_see(order.customer_id)]


def load_customers(session: Session, *, actor: Actor, wanted: uuid.UUID) -> list[Customer]:
    """Read the customer `wanted`, and with it those of every order held, into the session
    (where `get_customer` finds them without a round trip), unless it is there already. The
    caller keeps what this returns: the session holds its rows only while someone does."""
    if session.identity_map.get((Customer, (wanted,), None)) is not None:  # type: ignore[arg-type]
        return []
    ids = {order.customer_id for order in held(session, Order)} | {wanted}
    ids = {key for key in ids if actor.may_see(key)}
    if not ids:
        return []
    return list(session.scalars(select(Customer).where(Customer.id.in_(ids))))


def _grouped(
    session: Session, query: Select[tuple[T]], parent: InstrumentedAttribute[uuid.UUID], ids: list
) -> dict[uuid.UUID, list[T]]:
    """The rows of `query` whose `parent` is one of `ids`, by parent, in the query's order;
    a parent with none maps to []."""
    found: dict[uuid.UUID, list[T]] = {key: [] for key in ids}
    if ids:
        for row in session.scalars(query.where(parent.in_(ids))):
            found[getattr(row, parent.key)].append(row)
    return found


def events_by_order(
    session: Session, *, actor: Actor, orders: Iterable[Order]
) -> dict[uuid.UUID, list[OrderEvent]]:
    """The events of each visible order, oldest first."""
    ids = [order.id for order in _visible_orders(actor, orders)]
    query = select(OrderEvent).order_by(OrderEvent.id)
    return _grouped(session, query, OrderEvent.order_id, ids)


def notifications_by_order(
    session: Session, *, actor: Actor, orders: Iterable[Order]
) -> dict[uuid.UUID, list[Notification]]:
    """The notifications of each visible order, oldest first."""
    ids = [order.id for order in _visible_orders(actor, orders)]
    query = (
        select(Notification)
        .options(undefer(Notification.in_doubt))
        .order_by(Notification.created_at, Notification.id)
    )
    return _grouped(session, query, Notification.order_id, ids)


def attempts_by_notification(
    session: Session, *, actor: Actor, notifications: Iterable[Notification]
) -> dict[uuid.UUID, list[NotificationAttempt]]:
    """The attempts of each notification, oldest first. Asked only of notifications the actor
    was shown (through its order, or an admin's list), as the notifications' own rows are."""
    ids = [notification.id for notification in notifications]
    query = select(NotificationAttempt).order_by(NotificationAttempt.id)
    return _grouped(session, query, NotificationAttempt.notification_id, ids)
