"""Every list pages newest first with `first` (default 20, at most 100) and an opaque `after`
cursor; walking all pages gives every row once, and bad paging arguments are refused clearly."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from models import Customer, Order
from tests.factories import JANE_SUB, CustomerFactory, OrderFactory, row_counts

ORDER_LISTS = {
    "allOrders": "query($first: Int, $after: String) { allOrders(first: $first, after: $after)"
    " { id cursor } }",
    "myOrders": "query($first: Int, $after: String) { myOrders(first: $first, after: $after)"
    " { id cursor } }",
}
ORDERS_CONNECTION = """
query($first: Int, $after: String, $status: String, $customerId: ID) {
  orders(first: $first, after: $after, status: $status, customerId: $customerId) {
    edges { cursor node { id } }
    nodes { id }
    pageInfo { hasNextPage endCursor }
  }
}
"""
CUSTOMERS_CONNECTION = """
query($first: Int, $after: String) {
  customers(first: $first, after: $after) {
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


@pytest.fixture
def jane_customer(jane, session) -> Customer:
    jane.execute("{ me { id } }")
    return session.get_one(Customer, uuid.UUID(JANE_SUB))


def newest_first(session, query) -> list[str]:
    """Ids as the service must list them: newest first, ties broken by id."""
    model = query.column_descriptions[0]["entity"]
    rows = session.scalars(query.order_by(model.created_at.desc(), model.id.desc()))
    return [str(row.id) for row in rows]


def walk_list(client, field: str, first: int) -> tuple[list[str], int]:
    """Every id of a plain list field, following each page's last cursor; and the page count."""
    ids: list[str] = []
    after = None
    requests = 0
    while True:
        page = client.execute(ORDER_LISTS[field], {"first": first, "after": after})[field]
        requests += 1
        assert len(page) <= first
        ids += [order["id"] for order in page]
        if len(page) < first:
            return ids, requests
        after = page[-1]["cursor"]


def walk_connection(client, document: str, field: str, first: int, **variables):
    """Every node id of a connection, following pageInfo; and how many pages it took."""
    ids: list[str] = []
    after = None
    pages = 0
    while True:
        connection = client.execute(document, {"first": first, "after": after, **variables})[field]
        pages += 1
        edges = connection["edges"]
        assert 0 < len(edges) <= first or (pages == 1 and not edges)
        ids += [edge["node"]["id"] for edge in edges]
        info = connection["pageInfo"]
        if edges:
            assert info["endCursor"] == edges[-1]["cursor"]
        if not info["hasNextPage"]:
            return ids, pages
        after = info["endCursor"]


# --- walking all pages ----------------------------------------------------------------------


def test_all_orders_walks_every_order_once_newest_first(admin, session):
    OrderFactory.create_batch(11)

    ids, requests = walk_list(admin, "allOrders", first=4)

    assert ids == newest_first(session, select(Order))
    assert len(ids) == len(set(ids)) == 11
    assert requests == 3


def test_my_orders_walks_only_the_callers_orders(jane, jane_customer, session):
    mine = OrderFactory.create_batch(7, customer=jane_customer)
    OrderFactory.create_batch(3)

    ids, _ = walk_list(jane, "myOrders", first=3)

    assert ids == [str(order.id) for order in reversed(mine)]


def test_orders_connection_walks_every_order_once_newest_first(admin, session):
    OrderFactory.create_batch(10)

    ids, pages = walk_connection(admin, ORDERS_CONNECTION, "orders", first=3)

    assert ids == newest_first(session, select(Order))
    assert len(set(ids)) == 10
    assert pages == 4


def test_orders_connection_pages_a_filtered_list(admin, session):
    customer = CustomerFactory()
    confirmed = OrderFactory.create_batch(5, customer=customer, status="CONFIRMED")
    OrderFactory.create_batch(2, customer=customer)
    OrderFactory.create_batch(2, status="CONFIRMED")

    ids, pages = walk_connection(
        admin,
        ORDERS_CONNECTION,
        "orders",
        first=2,
        status="confirmed",
        customerId=str(customer.id),
    )

    assert ids == [str(order.id) for order in reversed(confirmed)]
    assert pages == 3


def test_orders_connection_of_a_customer_shows_only_its_own_orders(jane, jane_customer):
    mine = OrderFactory.create_batch(4, customer=jane_customer)
    OrderFactory.create_batch(4)

    ids, _ = walk_connection(jane, ORDERS_CONNECTION, "orders", first=3)

    assert ids == [str(order.id) for order in reversed(mine)]


def test_customers_connection_walks_every_customer_once_newest_first(admin, session):
    CustomerFactory.create_batch(8)

    ids, _ = walk_connection(admin, CUSTOMERS_CONNECTION, "customers", first=3)

    assert ids == newest_first(session, select(Customer))
    assert len(ids) == len(set(ids)) >= 9  # the eight, the admin, maybe others signed in


def test_orders_created_at_the_same_instant_are_neither_lost_nor_repeated(admin, session):
    instant = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    OrderFactory.create_batch(7, created_at=instant)

    ids, _ = walk_connection(admin, ORDERS_CONNECTION, "orders", first=2)

    assert ids == newest_first(session, select(Order))
    assert len(set(ids)) == 7


def test_a_page_edge_cursor_continues_from_that_edge(admin, session):
    OrderFactory.create_batch(6)
    expected = newest_first(session, select(Order))
    first_page = admin.execute(ORDERS_CONNECTION, {"first": 5})["orders"]

    second_edge_cursor = first_page["edges"][1]["cursor"]
    rest = admin.execute(ORDERS_CONNECTION, {"first": 100, "after": second_edge_cursor})["orders"]

    assert [edge["node"]["id"] for edge in rest["edges"]] == expected[2:]
    assert rest["pageInfo"]["hasNextPage"] is False


def test_an_empty_list_has_no_next_page_and_no_cursor(jane):
    connection = jane.execute(ORDERS_CONNECTION, {"first": 5})["orders"]

    assert connection == {
        "edges": [],
        "nodes": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


def test_last_full_page_says_there_is_no_next_page(admin):
    OrderFactory.create_batch(4)

    connection = admin.execute(ORDERS_CONNECTION, {"first": 4})["orders"]

    assert len(connection["edges"]) == 4
    assert connection["pageInfo"]["hasNextPage"] is False


# --- page sizes -----------------------------------------------------------------------------


def test_lists_default_to_twenty(admin):
    OrderFactory.create_batch(21)

    assert len(admin.execute("{ allOrders { id } }")["allOrders"]) == 20
    connection = admin.execute("{ orders { nodes { id } pageInfo { hasNextPage } } }")["orders"]
    assert len(connection["nodes"]) == 20
    assert connection["pageInfo"]["hasNextPage"] is True


def test_a_page_holds_up_to_one_hundred(admin):
    OrderFactory.create_batch(101)

    assert len(admin.execute("{ allOrders(first: 100) { id } }")["allOrders"]) == 100


LIST_FIELDS = {
    "allOrders": "allOrders({args}) {{ id }}",
    "myOrders": "myOrders({args}) {{ id }}",
    "ordersByCustomer": 'ordersByCustomer(customerCode: "{code}", {args}) {{ id }}',
    "orders": "orders({args}) {{ nodes {{ id }} }}",
    "allCustomers": "allCustomers({args}) {{ id }}",
    "customers": "customers({args}) {{ nodes {{ id }} }}",
    "Customer.orders": 'customerByCode(code: "{code}") {{ orders({args}) {{ nodes {{ id }} }} }}',
}
BAD_ARGUMENTS = {
    "first: 0": ("first", "first must be 1 to 100"),
    "first: 101": ("first", "first must be 1 to 100"),
    "first: -5": ("first", "first must be 1 to 100"),
    'after: "garbage"': ("after", "after is not a valid cursor"),
    'after: "{forged}"': ("after", "after is not a valid cursor"),
}
FORGED = base64.urlsafe_b64encode(b'["yesterday", 42]').decode()


@pytest.mark.parametrize("args", list(BAD_ARGUMENTS))
@pytest.mark.parametrize("field", list(LIST_FIELDS))
def test_bad_paging_arguments_are_refused_clearly(admin, session, field, args):
    customer = CustomerFactory()
    OrderFactory(customer=customer)
    admin.execute("{ me { id } }")
    before = row_counts(session)
    selection = LIST_FIELDS[field].format(args=args.format(forged=FORGED), code=customer.code)

    response = admin.post(f"{{ {selection} }}")

    assert response.status_code == 200
    body = response.get_json()
    [error] = body["errors"]
    assert error["path"][-1] == field.split(".")[-1]
    expected_field, expected_message = BAD_ARGUMENTS[args]
    assert error["message"] == expected_message
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == expected_field
    assert row_counts(session) == before


def test_a_bad_page_size_in_a_variable_is_refused_clearly(admin):
    response = admin.post(ORDERS_CONNECTION, {"first": 1000})

    assert response.status_code == 200
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "first must be 1 to 100"
