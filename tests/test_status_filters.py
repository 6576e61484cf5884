"""Order lists filter by typed statuses (`statusIn: [OrderStatus!]`) beside the original
API's string (`status: "confirmed"`, any letter case), which still runs as it did; a status
that is not one is refused before anything runs."""

from __future__ import annotations

import uuid

import pytest

from models import Customer
from tests.factories import JANE_SUB, CustomerFactory, OrderFactory, row_counts

LISTS = {
    "allOrders": "allOrders({args}) {{ id }}",
    "myOrders": "myOrders({args}) {{ id }}",
    "ordersByCustomer": 'ordersByCustomer(customerCode: "{code}", {args}) {{ id }}',
    "orders": "orders({args}) {{ nodes {{ id }} }}",
    "Customer.orders": 'customerByCode(code: "{code}") {{ orders({args}) {{ nodes {{ id }} }} }}',
}


@pytest.fixture
def jane_orders(jane, session) -> dict[str, list[str]]:
    """Jane's orders by status, newest first, beside another customer's of each status."""
    jane.execute("{ me { id } }")
    customer = session.get_one(Customer, uuid.UUID(JANE_SUB))
    mine: dict[str, list[str]] = {}
    for status in ("NEW", "CONFIRMED", "CANCELLED", "CONFIRMED", "NEW"):
        order = OrderFactory(customer=customer, status=status)
        mine.setdefault(status, []).insert(0, str(order.id))
        OrderFactory(status=status)
    return mine


def ids_of(data: dict, field: str) -> list[str]:
    found = data["customerByCode"]["orders"] if field == "Customer.orders" else data[field]
    rows = found["nodes"] if field in {"orders", "Customer.orders"} else found
    return [row["id"] for row in rows]


def listed(client, field: str, args: str) -> list[str]:
    selection = LISTS[field].format(args=args, code="JANE")
    return ids_of(client.execute(f"{{ {selection} }}"), field)


@pytest.fixture
def jane_code(session, jane_orders) -> None:
    session.get_one(Customer, uuid.UUID(JANE_SUB)).code = "JANE"
    session.flush()


@pytest.mark.parametrize("field", list(LISTS))
def test_status_in_lists_the_orders_of_those_statuses(jane, jane_orders, jane_code, field):
    confirmed = listed(jane, field, "statusIn: [CONFIRMED]")
    open_orders = listed(jane, field, "statusIn: [NEW, CONFIRMED]")

    assert confirmed == jane_orders["CONFIRMED"]
    assert set(open_orders) == set(jane_orders["NEW"] + jane_orders["CONFIRMED"])
    assert len(open_orders) == 4


@pytest.mark.parametrize("field", list(LISTS))
def test_the_string_status_still_filters_in_any_letter_case(jane, jane_orders, jane_code, field):
    assert listed(jane, field, 'status: "cancelled"') == jane_orders["CANCELLED"]
    assert listed(jane, field, 'status: "Cancelled"') == jane_orders["CANCELLED"]


def test_status_and_status_in_together_list_what_matches_both(jane, jane_orders, jane_code):
    assert (
        listed(jane, "myOrders", 'status: "new", statusIn: [NEW, CANCELLED]')
        == (jane_orders["NEW"])
    )
    assert listed(jane, "myOrders", 'status: "new", statusIn: [CONFIRMED]') == []


def test_an_empty_status_in_lists_nothing_and_null_lists_all(jane, jane_orders, jane_code):
    assert listed(jane, "orders", "statusIn: []") == []
    assert len(listed(jane, "orders", "statusIn: null")) == 5


def test_status_in_from_a_variable(jane, jane_orders):
    data = jane.execute(
        "query($s: [OrderStatus!]) { myOrders(statusIn: $s) { id status } }",
        {"s": ["CANCELLED"]},
    )

    assert data["myOrders"] == [{"id": jane_orders["CANCELLED"][0], "status": "CANCELLED"}]


def test_status_in_pages_with_a_cursor(admin):
    customer = CustomerFactory()
    confirmed = [str(OrderFactory(customer=customer, status="CONFIRMED").id) for _ in range(5)]
    OrderFactory.create_batch(3, customer=customer)
    query = """query($after: String, $id: ID) {
      orders(customerId: $id, statusIn: [CONFIRMED], first: 3, after: $after) {
        nodes { id } pageInfo { hasNextPage endCursor } } }"""

    first = admin.execute(query, {"id": str(customer.id)})["orders"]
    rest = admin.execute(query, {"id": str(customer.id), "after": first["pageInfo"]["endCursor"]})

    ids = [node["id"] for node in first["nodes"] + rest["orders"]["nodes"]]
    assert ids == confirmed[::-1]
    assert rest["orders"]["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ("{ myOrders(statusIn: [SHIPPED]) { id } }", None),
        ('{ myOrders(statusIn: ["NEW"]) { id } }', None),
        ("query($s: [OrderStatus!]) { myOrders(statusIn: $s) { id } }", {"s": ["new"]}),
    ],
    ids=["unknown-value", "a-string-literal", "lower-case-variable"],
)
def test_a_status_that_is_not_one_is_refused_before_anything_runs(
    jane, session, document, variables
):
    jane.execute("{ me { id } }")
    before = row_counts(session)

    response = jane.post(document, variables)

    assert response.status_code == 400
    body = response.get_json()
    assert "data" not in body
    [error] = body["errors"]
    assert "'OrderStatus'" in error["message"]  # refused for its value, not as unknown
    assert row_counts(session) == before


def test_a_bad_string_status_is_still_a_field_error(jane):
    response = jane.post('{ myOrders(status: "shipped") { id } }')

    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "status"
    assert error["message"] == "status must be one of NEW, CONFIRMED, CANCELLED"
