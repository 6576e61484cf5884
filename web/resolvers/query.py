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
    """A page as a Relay connection: edges with cursors, nodes and pageInfo."""
    return {
        "edges": [
            {"cursor": encode_cursor(node.created_at, node.id), "node": node} for node in page.items
        ],
        "nodes": page.items,
        "page_info": {
            "has_next_page": page.has_next_page,
            "has_previous_page": page.has_previous_page,
            "start_cursor": page.start_cursor,
            "end_cursor": page.end_cursor,
        },
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
def resolve_customers(_, info: GraphQLResolveInfo, **paging):
    return connection(query(customers.list_customers, info, **paging))


@query_type.field("order")
def resolve_order(_, info: GraphQLResolveInfo, id: str):
    return query(orders.get_order, info, order_id=id, field="id")


# The lists' filters and paging arguments (`status`, `statusIn`, `first`, `after`, and on
# connections `last`, `before`) reach models/ under the names Ariadne gives them (status_in),
# which are the list functions' own: a resolver passes them on as they come.


@query_type.field("allOrders")
def resolve_all_orders(_, info: GraphQLResolveInfo, **filters):
    return query(orders.list_orders, info, **filters).items


@query_type.field("myOrders")
def resolve_my_orders(_, info: GraphQLResolveInfo, **filters):
    actor = actor_of(info)
    if actor.customer_id is None:
        return []
    mine = query(customers.get_customer, info, customer_id=actor.customer_id)
    return query(orders.list_orders, info, customer=mine, **filters).items


@query_type.field("ordersByCustomer")
def resolve_orders_by_customer(_, info: GraphQLResolveInfo, customer_code: str, **filters):
    customer = query(customers.get_customer_by_code, info, code=customer_code)
    if customer is None:
        return []
    return query(orders.list_orders, info, customer=customer, **filters).items


@query_type.field("orders")
def resolve_orders(_, info: GraphQLResolveInfo, customer_id=None, **filters):
    customer = None
    if customer_id is not None:
        customer = query(customers.get_customer, info, customer_id=customer_id)
        if customer is None:
            return connection(Page(items=[]))
    return connection(query(orders.list_orders, info, customer=customer, **filters))
