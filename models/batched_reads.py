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

from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from models.actors import Actor
from models.customers import Customer
from models.notifications import Notification, NotificationAttempt
from models.orders import Order, OrderEvent

T = TypeVar("T")


def held(session: Session, kind: type[T]) -> list[T]:
    """The rows of `kind` this session has read."""
    return [row for row in session.identity_map.values() if isinstance(row, kind)]


def _visible_orders(actor: Actor, orders: Iterable[Order]) -> list[Order]:
    return [order for order in orders if actor.is_admin or order.customer_id == actor.customer_id]


def load_customers(session: Session, *, actor: Actor, wanted: uuid.UUID) -> list[Customer]:
    """Read the customer `wanted`, and with it those of every order held, into the session
    (where `get_customer` finds them without a round trip), unless it is there already. The
    caller keeps what this returns: the session holds its rows only while someone does."""
    if session.identity_map.get((Customer, (wanted,), None)) is not None:  # type: ignore[arg-type]
        return []
    ids = {order.customer_id for order in held(session, Order)} | {wanted}
    if not actor.is_admin:
        ids &= {actor.customer_id}
    if not ids:
        return []
    return list(session.scalars(select(Customer).where(Customer.id.in_(ids))))


def events_by_order(
    session: Session, *, actor: Actor, orders: Iterable[Order]
) -> dict[uuid.UUID, list[OrderEvent]]:
    """The events of each visible order, oldest first; an order with none maps to []."""
    ids = [order.id for order in _visible_orders(actor, orders)]
    found: dict[uuid.UUID, list[OrderEvent]] = {key: [] for key in ids}
    if ids:
        rows = session.scalars(
            select(OrderEvent).where(OrderEvent.order_id.in_(ids)).order_by(OrderEvent.id)
        )
        for event in rows:
            found[event.order_id].append(event)
    return found


def notifications_by_order(
    session: Session, *, actor: Actor, orders: Iterable[Order]
) -> dict[uuid.UUID, list[Notification]]:
    """The notifications of each visible order, oldest first."""
    ids = [order.id for order in _visible_orders(actor, orders)]
    found: dict[uuid.UUID, list[Notification]] = {key: [] for key in ids}
    if ids:
        rows = session.scalars(
            select(Notification)
            .options(undefer(Notification.in_doubt))
            .where(Notification.order_id.in_(ids))
            .order_by(Notification.created_at, Notification.id)
        )
        for notification in rows:
            found[notification.order_id].append(notification)
    return found


def attempts_by_notification(
    session: Session, *, actor: Actor, notifications: Iterable[Notification]
) -> dict[uuid.UUID, list[NotificationAttempt]]:
    """The attempts of each notification, oldest first. Asked only of notifications the actor
    was shown (through its order, or an admin's list), as the notifications' own rows are."""
    ids = [notification.id for notification in notifications]
    found: dict[uuid.UUID, list[NotificationAttempt]] = {key: [] for key in ids}
    if ids:
        rows = session.scalars(
            select(NotificationAttempt)
            .where(NotificationAttempt.notification_id.in_(ids))
            .order_by(NotificationAttempt.id)
        )
        for attempt in rows:
            found[attempt.notification_id].append(attempt)
    return found
