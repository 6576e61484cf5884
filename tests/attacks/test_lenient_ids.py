"""Attack: an id written some other way than the one the service gives out. Python's UUID
reads full-width and Arabic-Indic digits, braces, `urn:uuid:` and ids without hyphens, so
`cancelOrder(orderId:)` with an id in full-width digits cancelled the order. Only the
canonical form (8-4-4-4-12 ASCII hex digits, either case) is an id; anything else is refused
as a field error naming the argument the client used, and changes nothing.

Production mode, a customer's token, real PostgreSQL.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from models.customers import Customer
from models.orders import Order
from tests.clients import GraphQLClient
from tests.factories import JANE_SUB, OrderFactory

FULL_WIDTH = {ord("0") + d: 0xFF10 + d for d in range(10)}
ARABIC_INDIC = {ord("0") + d: 0x0660 + d for d in range(10)}
VARIANTS = {
    "full-width-digits": lambda id: id.translate(FULL_WIDTH),
    "arabic-indic-digits": lambda id: id.translate(ARABIC_INDIC),
    "braces": lambda id: "{" + id + "}",
    "urn": lambda id: "urn:uuid:" + id,
    "no-hyphens": lambda id: id.replace("-", ""),
    "spaces": lambda id: f" {id} ",
    "empty": lambda id: "",
}
# Digits in every group, so that each variant differs from the canonical form.
ORDER_ID = "41a3d5bc-1234-4567-8901-234567890123"
CANCEL = """mutation($id: ID!) { cancelOrder(orderId: $id) {
  success order { status } fieldErrors { field code message } } }"""


@pytest.fixture
def jane(production_app, session, idp) -> GraphQLClient:
    client = GraphQLClient(production_app.test_client(), idp.issue_access_token("jane"))
    client.execute("{ me { id } }")
    return client


@pytest.fixture
def order(jane, session) -> str:
    customer = session.query(Customer).filter_by(oidc_subject=JANE_SUB).one()
    OrderFactory(id=uuid.UUID(ORDER_ID), customer=customer)
    return ORDER_ID


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_an_id_written_otherwise_cancels_nothing(jane, order, session, variant):
    payload = jane.execute(CANCEL, {"id": variant(order)})["cancelOrder"]

    assert payload["success"] is False
    assert payload["order"] is None
    assert [(e["field"], e["code"]) for e in payload["fieldErrors"]] == [("orderId", "INVALID")]
    assert session.scalars(select(Order.status).where(Order.id == uuid.UUID(order))).one() == "NEW"


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_an_id_written_otherwise_finds_no_order_and_names_the_argument(jane, order, variant):
    response = jane.post("query($id: ID!) { order(id: $id) { id } }", {"id": variant(order)})

    body = response.get_json()
    assert body["data"] == {"order": None}
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "id", "reason": "INVALID"}
    assert error["message"] == "id is not a valid order id"


def test_the_canonical_form_in_either_case_is_the_order(jane, order):
    upper = order.upper()

    found = jane.execute("query($id: ID!) { order(id: $id) { id } }", {"id": upper})["order"]
    cancelled = jane.execute(CANCEL, {"id": upper})["cancelOrder"]

    assert found == {"id": ORDER_ID}
    assert cancelled["success"] is True
    assert cancelled["order"] == {"status": "CANCELLED"}
