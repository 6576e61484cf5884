"""Fields of the Order and OrderEvent types."""

from __future__ import annotations

import json

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from models import customers
from models.orders import Order, OrderEvent
from models.pagination import encode_cursor
from web.resolvers import batches
from web.resolvers.common import query

order_type = ObjectType("Order")
order_event_type = ObjectType("OrderEvent")


@order_type.field("orderDetails")
def resolve_order_details(order: Order, _info: GraphQLResolveInfo) -> str | None:
    return order.details


@order_type.field("unitPrice")
def resolve_unit_price(order: Order, _info: GraphQLResolveInfo) -> dict:
    return {"amount": order.unit_price, "currency": order.currency}


@order_type.field("total")
def resolve_total(order: Order, _info: GraphQLResolveInfo) -> dict:
    return {"amount": order.total, "currency": order.currency}


@order_type.field("totalPrice")
def resolve_total_price(order: Order, _info: GraphQLResolveInfo) -> float:
    return float(order.total)


@order_type.field("cursor")
def resolve_cursor(order: Order, _info: GraphQLResolveInfo) -> str:
    return encode_cursor(order.created_at, order.id)


@order_type.field("customer")
def resolve_customer(order: Order, info: GraphQLResolveInfo):
    batches.load_customer(order, info)
    return query(customers.get_customer, info, customer_id=order.customer_id)


@order_type.field("events")
def resolve_events(order: Order, info: GraphQLResolveInfo) -> list[OrderEvent]:
    return batches.events_of(order, info)


@order_event_type.field("data")
def resolve_event_data(event: OrderEvent, _info: GraphQLResolveInfo) -> str:
    # As written, not \u-escaped: an emoji is 4 bytes of the answer, not 14 (the cost counts 4).
    return json.dumps(event.data, sort_keys=True, ensure_ascii=False)


@order_type.field("notifications")
def resolve_notifications(order: Order, info: GraphQLResolveInfo):
    return batches.notifications_of(order, info)
