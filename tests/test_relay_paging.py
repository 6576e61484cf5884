"""Connections page both ways, as the Relay Cursor Connections spec defines it: `first` with
`after` forward, `last` with `before` backward, within the same cap (1 to 100, 20 when
neither is given); pageInfo has both flags and both cursors; first and last together, and
cursors that are not ours, are refused clearly and change nothing."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from models import Customer, Order
from models.notifications import Notification
from tests.factories import JANE_SUB, CustomerFactory, OrderFactory, row_counts
from tests.sms_support import make_notification

PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"
PAGING = "first: $first, after: $after, last: $last, before: $before"
VARIABLES = "$first: Int, $after: String, $last: Int, $before: String"
CONNECTIONS = {
    "orders": f"query({VARIABLES}) {{ connection: orders({PAGING}) "
    f"{{ edges {{ cursor node {{ id }} }} {PAGE_INFO} }} }}",
    "customers": f"query({VARIABLES}) {{ connection: customers({PAGING}) "
    f"{{ edges {{ cursor node {{ id }} }} {PAGE_INFO} }} }}",
    "notifications": f"query({VARIABLES}) {{ connection: notifications({PAGING}) "
    f"{{ edges {{ cursor node {{ id }} }} {PAGE_INFO} }} }}",
    "Customer.orders": f"query($code: String!, {VARIABLES}) {{ customerByCode(code: $code) "
    f"{{ connection: orders({PAGING}) {{ edges {{ cursor node {{ id }} }} {PAGE_INFO} }} }} }}",
}
MODELS = {"orders": Order, "customers": Customer, "notifications": Notification}


def newest_first(session, model) -> list[str]:
    """Ids as the service lists them: newest first, ties broken by id."""
    rows = session.scalars(select(model).order_by(model.created_at.desc(), model.id.desc()))
    return [str(row.id) for row in rows]


@pytest.fixture
def dataset(session, admin):
    """Eleven orders of one customer, three of another, a notification for each of four, and
    the admin's own customer record; `code` is the first customer's code."""
    admin.execute("{ me { id } }")
    customer = CustomerFactory()
    OrderFactory.create_batch(11, customer=customer)
    OrderFactory.create_batch(3)
    for _ in range(4):
        make_notification(session)
    return customer


def expected_ids(session, field: str, customer: Customer) -> list[str]:
    if field == "Customer.orders":
        query = select(Order).where(Order.customer_id == customer.id)
        rows = session.scalars(query.order_by(Order.created_at.desc(), Order.id.desc()))
        return [str(row.id) for row in rows]
    return newest_first(session, MODELS[field])


def page(client, field: str, customer: Customer, **paging) -> dict:
    variables = {"code": customer.code} if field == "Customer.orders" else {}
    data = client.execute(CONNECTIONS[field], {**variables, **paging})
    return (data["customerByCode"] if field == "Customer.orders" else data)["connection"]


def node_ids(connection: dict) -> list[str]:
    return [edge["node"]["id"] for edge in connection["edges"]]


def assert_cursors_name_the_ends(connection: dict) -> None:
    info, edges = connection["pageInfo"], connection["edges"]
    assert info["startCursor"] == edges[0]["cursor"]
    assert info["endCursor"] == edges[-1]["cursor"]


@pytest.mark.parametrize("field", list(CONNECTIONS))
def test_paging_forward_gives_every_row_once_in_order(admin, session, dataset, field):
    ids: list[str] = []
    pages: list[dict] = []
    after = None
    while True:
        connection = page(admin, field, dataset, first=4, after=after)
        pages.append(connection["pageInfo"])
        assert 0 < len(connection["edges"]) <= 4
        assert_cursors_name_the_ends(connection)
        ids += node_ids(connection)
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]

    expected = expected_ids(session, field, dataset)
    assert ids == expected
    assert len(pages) == -(-len(expected) // 4)
    # Forward, hasPreviousPage is worked out too: false only on the first page.
    assert [info["hasPreviousPage"] for info in pages] == [False] + [True] * (len(pages) - 1)


@pytest.mark.parametrize("field", list(CONNECTIONS))
def test_paging_backward_gives_every_row_once_in_order(admin, session, dataset, field):
    ids: list[str] = []
    pages: list[dict] = []
    before = None
    while True:
        connection = page(admin, field, dataset, last=4, before=before)
        pages.append(connection["pageInfo"])
        assert 0 < len(connection["edges"]) <= 4
        assert_cursors_name_the_ends(connection)
        ids = node_ids(connection) + ids  # each page is in list order, newest first
        if not connection["pageInfo"]["hasPreviousPage"]:
            break
        before = connection["pageInfo"]["startCursor"]

    expected = expected_ids(session, field, dataset)
    assert ids == expected
    assert len(pages) == -(-len(expected) // 4)
    # Backward, hasNextPage is worked out too: false only on the page that ends the list.
    assert [info["hasNextPage"] for info in pages] == [False] + [True] * (len(pages) - 1)


def test_last_without_before_is_the_end_of_the_list(admin, session, dataset):
    expected = newest_first(session, Order)

    connection = page(admin, "orders", dataset, last=3)

    assert node_ids(connection) == expected[-3:]
    assert connection["pageInfo"]["hasPreviousPage"] is True
    assert connection["pageInfo"]["hasNextPage"] is False


def test_rows_created_at_one_instant_page_backward_without_loss_or_repeat(admin, session):
    instant = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    OrderFactory.create_batch(7, created_at=instant)
    ids: list[str] = []
    before = None
    while True:
        connection = admin.execute(CONNECTIONS["orders"], {"last": 2, "before": before})[
            "connection"
        ]
        ids = node_ids(connection) + ids
        if not connection["pageInfo"]["hasPreviousPage"]:
            break
        before = connection["pageInfo"]["startCursor"]

    assert ids == newest_first(session, Order)
    assert len(set(ids)) == 7


def test_a_cursor_pages_the_same_list_both_ways(admin, session, dataset):
    expected = newest_first(session, Order)
    edges = page(admin, "orders", dataset, first=100)["edges"]
    cursor = edges[5]["cursor"]  # the sixth order's

    after = page(admin, "orders", dataset, first=100, after=cursor)
    before = page(admin, "orders", dataset, last=100, before=cursor)
    nearest = page(admin, "orders", dataset, last=2, before=cursor)

    assert [*node_ids(before), expected[5], *node_ids(after)] == expected
    assert node_ids(nearest) == expected[3:5]
    assert nearest["pageInfo"] == {
        "hasNextPage": True,  # the sixth order and those after it
        "hasPreviousPage": True,
        "startCursor": edges[3]["cursor"],
        "endCursor": edges[4]["cursor"],
    }


def test_after_and_before_together_page_the_rows_between(admin, session, dataset):
    expected = newest_first(session, Order)
    edges = page(admin, "orders", dataset, first=100)["edges"]
    window = {"after": edges[2]["cursor"], "before": edges[9]["cursor"]}

    forward = page(admin, "orders", dataset, first=4, **window)
    backward = page(admin, "orders", dataset, last=4, **window)

    assert node_ids(forward) == expected[3:7]
    assert node_ids(backward) == expected[5:9]
    assert forward["pageInfo"]["hasNextPage"] is True  # expected[7:9] are still inside
    assert backward["pageInfo"]["hasPreviousPage"] is True


def test_a_cursor_on_the_far_side_bounds_the_flag_of_the_pages_own_direction(
    admin, session, dataset
):
    # As the spec defines it (and the README says): the flag of the direction a page is read
    # in counts the rows between the page and the far cursor, never those beyond that cursor.
    expected = newest_first(session, Order)
    edges = page(admin, "orders", dataset, first=100)["edges"]
    cursor = edges[5]["cursor"]

    backward = page(admin, "orders", dataset, last=100, after=cursor)
    forward = page(admin, "orders", dataset, first=100, before=cursor)

    assert node_ids(backward) == expected[6:]
    assert backward["pageInfo"]["hasPreviousPage"] is False  # though six rows sit before it
    assert backward["pageInfo"]["hasNextPage"] is False  # no `before`: the list ends here
    assert node_ids(forward) == expected[:5]
    assert forward["pageInfo"]["hasNextPage"] is False  # though rows sit after the cursor
    assert forward["pageInfo"]["hasPreviousPage"] is False  # no `after`: the list starts here


def test_edge_cursors_are_the_nodes_own_cursors(admin, dataset):
    connection = admin.execute("{ orders(last: 5) { edges { cursor node { cursor } } } }")

    for edge in connection["orders"]["edges"]:
        assert edge["cursor"] == edge["node"]["cursor"]


def test_an_empty_connection_has_no_pages_and_no_cursors(jane):
    for paging in ({"first": 5}, {"last": 5}):
        connection = jane.execute(CONNECTIONS["orders"], paging)["connection"]

        assert connection == {
            "edges": [],
            "pageInfo": {
                "hasNextPage": False,
                "hasPreviousPage": False,
                "startCursor": None,
                "endCursor": None,
            },
        }


def test_neither_first_nor_last_serves_twenty_from_the_start(admin, session):
    OrderFactory.create_batch(21)

    connection = admin.execute(CONNECTIONS["orders"])["connection"]

    assert node_ids(connection) == newest_first(session, Order)[:20]
    assert connection["pageInfo"]["hasNextPage"] is True
    assert connection["pageInfo"]["hasPreviousPage"] is False


# --- refused ------------------------------------------------------------------------------

REFUSED = {
    "first: 3, last: 3": (
        "last",
        "give first or last, not both: first pages forward from after, last backward from before",
    ),
    "last: 0": ("last", "last must be 1 to 100"),
    "last: 101": ("last", "last must be 1 to 100"),
    "last: -1": ("last", "last must be 1 to 100"),
    'before: "garbage"': ("before", "before is not a valid cursor"),
    'last: 2, before: "{forged}"': ("before", "before is not a valid cursor"),
    'after: "{forged}", before: "{real}"': ("after", "after is not a valid cursor"),
}
FORGED = base64.urlsafe_b64encode(b'["yesterday", 42]').decode()
FIELDS = {
    "orders": "orders({args}) {{ nodes {{ id }} }}",
    "customers": "customers({args}) {{ nodes {{ id }} }}",
    "notifications": "notifications({args}) {{ nodes {{ id }} }}",
    "Customer.orders": 'customerByCode(code: "{code}") {{ orders({args}) {{ nodes {{ id }} }} }}',
}


@pytest.mark.parametrize("args", list(REFUSED))
@pytest.mark.parametrize("field", list(FIELDS))
def test_bad_paging_is_a_field_error_that_changes_nothing(admin, session, field, args):
    customer = CustomerFactory()
    OrderFactory(customer=customer)
    admin.execute("{ me { id } }")
    before = row_counts(session)
    real = admin.execute("{ orders(first: 1) { pageInfo { endCursor } } }")
    arguments = args.format(forged=FORGED, real=real["orders"]["pageInfo"]["endCursor"])
    selection = FIELDS[field].format(args=arguments, code=customer.code)

    response = admin.post(f"{{ {selection} }}")

    assert response.status_code == 200
    body = response.get_json()
    [error] = body["errors"]
    assert error["path"][-1] == field.split(".")[-1]
    expected_field, expected_message = REFUSED[args]
    assert error["message"] == expected_message
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == expected_field
    assert row_counts(session) == before


def test_a_cursor_of_a_deleted_row_still_pages_from_its_place(admin, session):
    OrderFactory.create_batch(5)
    expected = newest_first(session, Order)
    cursor = admin.execute("{ orders(first: 3) { pageInfo { endCursor } } }")["orders"]["pageInfo"][
        "endCursor"
    ]
    session.delete(session.get(Order, uuid.UUID(expected[2])))
    session.flush()

    rest = admin.execute(CONNECTIONS["orders"], {"first": 10, "after": cursor})["connection"]
    earlier = admin.execute(CONNECTIONS["orders"], {"last": 10, "before": cursor})["connection"]

    assert node_ids(rest) == expected[3:]
    assert node_ids(earlier) == expected[:2]
    assert rest["pageInfo"]["hasPreviousPage"] is True  # the two before it are still there
    assert earlier["pageInfo"]["hasNextPage"] is True


def test_a_customer_pages_only_its_own_orders_backward(jane, session):
    jane.execute("{ me { id } }")
    mine = OrderFactory.create_batch(5, customer=session.get_one(Customer, uuid.UUID(JANE_SUB)))
    OrderFactory.create_batch(3)

    connection = jane.execute(CONNECTIONS["orders"], {"last": 100})["connection"]

    assert node_ids(connection) == [str(order.id) for order in reversed(mine)]
    assert connection["pageInfo"]["hasPreviousPage"] is False


@pytest.mark.parametrize("size", ["first", "last"])
def test_last_costs_what_it_serves_as_first_does(admin, size):
    fields = "nodes { id status attempts lastError phone body createdAt updatedAt }"
    aliases = " ".join(f"n{i}: notifications({size}: 100) {{ {fields} }}" for i in range(6))

    response = admin.post("{ " + aliases + " }")

    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    # Each alias: 10 + 100 x (1 + nodes (1 + 6 fields + lastError 12 + body 3)) = 2,310;
    # six: 13,860.
    assert error["extensions"]["cost"]["requestedQueryCost"] == 13860
