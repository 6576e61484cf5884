"""Root query fields: thin calls into models/, shaped for the schema."""

from __future__ import annotations

from typing import Any

from ariadne import QueryType
from graphql import GraphQLResolveInfo

from models import customers, orders
from models.pagination import Page, encode_cursor
from web.resolvers.common import actor_of, query

query_type = QueryType()


def connection(page: Page[Any]) -> dict[str, Any]:
    """A page as a connection: edges with cursors, nodes and pageInfo."""
    return {
        "edges": [
            {"cursor": encode_cursor(node.created_at, node.id), "node": node} for node in page.items
        ],
        "nodes": page.items,
        "page_info": {"has_next_page": page.has_next_page, "end_cursor": page.end_cursor},
    }


@query_type.field("me")
def resolve_me(_, info: GraphQLResolveInfo):
    actor = actor_of(info)
    if actor.customer_id is None:
        return None
    return query(customers.get_customer, info, customer_id=actor.customer_id)


@query_type.field("customer")
def resolve_customer(_, info: GraphQLResolveInfo, id: str):
    return query(customers.get_customer, info, customer_id=id)


@query_type.field("customerByCode")
def resolve_customer_by_code(_, info: GraphQLResolveInfo, code: str):
    return query(customers.get_customer_by_code, info, code=code)


@query_type.field("allCustomers")
def resolve_all_customers(_, info: GraphQLResolveInfo, first: int, after: str | None = None):
    return query(customers.list_customers, info, first=first, after=after).items


@query_type.field("customers")
def resolve_customers(_, info: GraphQLResolveInfo, first: int, after: str | None = None):
    return connection(query(customers.list_customers, info, first=first, after=after))


@query_type.field("order")
def resolve_order(_, info: GraphQLResolveInfo, id: str):
    return query(orders.get_order, info, order_id=id)


@query_type.field("allOrders")
def resolve_all_orders(_, info: GraphQLResolveInfo, first: int, status=None, after=None):
    return query(orders.list_orders, info, status=status, first=first, after=after).items


@query_type.field("myOrders")
def resolve_my_orders(_, info: GraphQLResolveInfo, first: int, status=None, after=None):
    actor = actor_of(info)
    if actor.customer_id is None:
        return []
    mine = query(customers.get_customer, info, customer_id=actor.customer_id)
    return query(
        orders.list_orders, info, customer=mine, status=status, first=first, after=after
    ).items


@query_type.field("ordersByCustomer")
def resolve_orders_by_customer(
    _, info: GraphQLResolveInfo, customer_code: str, first: int, status=None, after=None
):
    customer = query(customers.get_customer_by_code, info, code=customer_code)
    if customer is None:
        return []
    return query(
        orders.list_orders, info, customer=customer, status=status, first=first, after=after
    ).items


@query_type.field("orders")
def resolve_orders(
    _, info: GraphQLResolveInfo, first: int, customer_id=None, status=None, after=None
):
    customer = None
    if customer_id is not None:
        customer = query(customers.get_customer, info, customer_id=customer_id)
        if customer is None:
            return connection(Page(items=[], has_next_page=False, end_cursor=None))
    return connection(
        query(orders.list_orders, info, customer=customer, status=status, first=first, after=after)
    )
