"""A request's per-row reads, made a list at a time (models.batched_reads) and kept for the
rest of the request: the first order of a page whose events are asked for reads the events of
every order the request holds; the others find theirs here."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from graphql import GraphQLResolveInfo

from models import batched_reads
from models.db import db
from models.notifications import Notification
from models.orders import Order
from web.resolvers.common import query

T = TypeVar("T")
SHOWN_NOTIFICATIONS = "batch:shown-notifications"


def _of(
    info: GraphQLResolveInfo,
    name: str,
    key: uuid.UUID,
    load: Callable[[set[uuid.UUID]], dict[uuid.UUID, list[T]]],
) -> list[T]:
    """The rows of `name` for `key`, reading them for every pending key at once on a miss."""
    cache: dict[uuid.UUID, list[T]] = info.context.setdefault(f"batch:{name}", {})
    if key not in cache:
        cache.update(load(set(cache)))
    return cache.get(key, [])


def _pending_orders(order: Order, done: set[uuid.UUID]) -> list[Order]:
    held = batched_reads.held(db.session(), Order)
    return [order, *(other for other in held if other.id not in done and other is not order)]


def events_of(order: Order, info: GraphQLResolveInfo) -> list[Any]:
    return _of(
        info,
        "events",
        order.id,
        lambda done: query(
            batched_reads.events_by_order, info, orders=_pending_orders(order, done)
        ),
    )


def notifications_of(order: Order, info: GraphQLResolveInfo) -> list[Notification]:
    found = _of(
        info,
        "notifications",
        order.id,
        lambda done: query(
            batched_reads.notifications_by_order, info, orders=_pending_orders(order, done)
        ),
    )
    shown(info, found)
    return found


def shown(info: GraphQLResolveInfo, notifications: Iterable[Notification]) -> None:
    """Note notifications handed to the caller: only theirs have their attempts read along."""
    info.context.setdefault(SHOWN_NOTIFICATIONS, {}).update((n.id, n) for n in notifications)


def attempts_of(notification: Notification, info: GraphQLResolveInfo) -> list[Any]:
    def load(done: set[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
        others = info.context.get(SHOWN_NOTIFICATIONS, {})
        pending = [notification, *(n for k, n in others.items() if k not in done)]
        return query(batched_reads.attempts_by_notification, info, notifications=pending)

    return _of(info, "history", notification.id, load)


def load_customer(order: Order, info: GraphQLResolveInfo) -> None:
    """Read the order's customer, and those of every order held, unless it is read already."""
    loaded = query(batched_reads.load_customers, info, wanted=order.customer_id)
    info.context.setdefault("batch:customers", []).extend(loaded)
