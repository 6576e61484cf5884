"""Attack: a document that costs little in fields and much in bytes.

`orderDetails` holds up to 2,000 characters: 8 KB of emoji. A customer's
`{ myOrders(first: 100) { a0: orderDetails ... a47: orderDetails } }` cost 4,910 at 1 a
field, within the limit of 5,000, and answered 38 MB; a few such clients filled a worker's
memory. A long text field now costs a point per 256 bytes of its longest value
(web/document_limits.py: LONG_TEXT_BYTES), so the document is refused before it runs, while
a page of 100 orders with their details is still served. The answers are measured here, so
the weights cannot fall below what a field really takes.

Production mode, a customer's token, real PostgreSQL.
"""

from __future__ import annotations

import pytest

from models.actors import Actor
from models.customers import Customer
from models.orders import cancel_order
from models.validation import MAX_DETAILS, MAX_ITEM
from tests.clients import GraphQLClient
from tests.factories import JANE_SUB, OrderFactory, row_counts
from web.document_limits import BYTES_A_POINT, FIELD_POINTS

EMOJI = "\U0001f600"  # 4 bytes of UTF-8, one character
HOSTILE = "{ myOrders(first: 100) { " + " ".join(f"a{i}: orderDetails" for i in range(48)) + " } }"


@pytest.fixture
def jane(production_app, session, idp) -> GraphQLClient:
    client = GraphQLClient(production_app.test_client(), idp.issue_access_token("jane"))
    client.execute("{ me { id } }")  # provisioned, so a refused request is seen to write nothing
    return client


@pytest.fixture
def long_orders(jane, session) -> list:
    """100 of jane's orders, each with the longest details and item there may be."""
    customer = session.query(Customer).filter_by(oidc_subject=JANE_SUB).one()
    orders = OrderFactory.create_batch(
        100,
        customer=customer,
        details=EMOJI * MAX_DETAILS,
        item=EMOJI * MAX_ITEM,
        created_by=JANE_SUB,
    )
    return orders


def test_many_aliases_of_a_long_text_field_are_refused_as_too_costly(jane, long_orders, session):
    before = row_counts(session)

    response = jane.post(HOSTILE)

    assert response.status_code == 400, response.get_data(as_text=True)[:500]
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    # myOrders 10 + 100 rows x (1 + 48 x 32): 8,000 bytes at 256 a point.
    assert error["extensions"]["cost"] == {"requestedQueryCost": 153710, "maximumAvailable": 5000}
    assert row_counts(session) == before


def test_a_page_of_orders_with_their_details_is_served(jane, long_orders):
    data = jane.execute("{ myOrders(first: 100) { id status orderDetails item createdAt } }")

    assert len(data["myOrders"]) == 100
    assert {order["orderDetails"] for order in data["myOrders"]} == {EMOJI * MAX_DETAILS}


def test_a_long_text_field_takes_no_more_of_the_answer_than_it_costs(
    production_app, idp, jane, long_orders, session
):
    order = long_orders[0]
    actor = Actor(subject=JANE_SUB, roles=frozenset(), customer_id=order.customer_id)
    cancel_order(
        session, actor=actor, order_id=str(order.id), reason='"' * MAX_DETAILS, company="Acme"
    )
    session.commit()

    def size(selection: str) -> int:
        response = jane.post(f'{{ order(id: "{order.id}") {{ {selection} }} }}')
        assert response.status_code == 200
        assert "errors" not in response.get_json()
        return len(response.get_data())

    bare = size("__typename")
    # An event's data is the cancel's reason, JSON in a JSON string: each quote 4 bytes.
    for field, selection in [
        (("Order", "orderDetails"), "orderDetails"),
        (("Order", "item"), "item"),
        (("OrderEvent", "data"), "events { data }"),
    ]:
        added = size(f"__typename {selection}") - bare
        # The longest value indeed: more than a point less than its weight.
        assert (FIELD_POINTS[field] - 1) * BYTES_A_POINT < added, selection
        assert added <= FIELD_POINTS[field] * BYTES_A_POINT, selection
