"""Fields of the Customer type."""

from __future__ import annotations

from ariadne import ObjectType
from graphql import GraphQLResolveInfo

from models import orders
from models.customers import Customer
from models.pagination import encode_cursor
from web.resolvers.common import query
from web.resolvers.query import connection

customer_type = ObjectType("Customer")


@customer_type.field("cursor")
def resolve_cursor(customer: Customer, _info: GraphQLResolveInfo) -> str:
    return encode_cursor(customer.created_at, customer.id)


@customer_type.field("orders")
def resolve_orders(customer: Customer, info: GraphQLResolveInfo, **filters):
    return connection(query(orders.list_orders, info, customer=customer, **filters))
