"""Bad input is refused in the mutation payload with a field and a code: HTTP 200, never a
500, and nothing written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from models import Customer, Order
from tests.factories import JANE_SUB, CustomerFactory, OrderFactory, row_counts

PAYLOAD = "success message errors fieldErrors { field code message }"
DOCUMENTS = {
    "createOrder": "mutation($input: CreateOrderInput!) "
    f"{{ createOrder(input: $input) {{ {PAYLOAD} order {{ id }} }} }}",
    "createCustomer": "mutation($input: CreateCustomerInput!) "
    f"{{ createCustomer(input: $input) {{ {PAYLOAD} customer {{ id }} }} }}",
    "updateCustomer": "mutation($id: ID!, $input: UpdateCustomerInput!) "
    f"{{ updateCustomer(id: $id, input: $input) {{ {PAYLOAD} customer {{ id }} }} }}",
    "confirmOrder": f"mutation($id: ID!) {{ confirmOrder(orderId: $id) {{ {PAYLOAD} }} }}",
    "cancelOrder": "mutation($id: ID!, $reason: String) "
    f"{{ cancelOrder(orderId: $id, reason: $reason) {{ {PAYLOAD} }} }}",
}
ORDER_ID = "<the order>"
CUSTOMER_ID = "<the customer>"
UNKNOWN_ID = str(uuid.UUID(int=1))
OMIT = "<left out>"


def order(**fields: Any) -> dict[str, Any]:
    return {"input": {"unitPrice": "100.00", **fields}}


def customer(**fields: Any) -> dict[str, Any]:
    return {"input": {"name": "Wanjiru Stores", **fields}}


CASES = [
    # (caller, mutation, variables, field, code)
    ("jane", "createOrder", order(unitPrice="0"), "unitPrice", "INVALID"),
    ("jane", "createOrder", order(unitPrice="0.00"), "unitPrice", "INVALID"),
    ("jane", "createOrder", order(unitPrice=OMIT, price=0), "price", "INVALID"),
    ("jane", "createOrder", order(unitPrice="-5"), "unitPrice", "INVALID"),
    ("jane", "createOrder", order(unitPrice=-0.01), "unitPrice", "INVALID"),
    ("jane", "createOrder", order(unitPrice=OMIT, price="-1200"), "price", "INVALID"),
    ("jane", "createOrder", order(unitPrice="1000000000.01"), "unitPrice", "INVALID"),
    ("jane", "createOrder", order(unitPrice="1e30"), "unitPrice", "INVALID"),
    ("jane", "createOrder", order(unitPrice=OMIT, price=1e12), "price", "INVALID"),
    ("jane", "createOrder", order(unitPrice="900000000", quantity=2), "quantity", "INVALID"),
    ("jane", "createOrder", order(quantity=0), "quantity", "INVALID"),
    ("jane", "createOrder", order(quantity=-3), "quantity", "INVALID"),
    ("jane", "createOrder", order(quantity=100_001), "quantity", "INVALID"),
    ("jane", "createOrder", order(price="100.00"), "price", "INVALID"),
    ("jane", "createOrder", order(unitPrice=OMIT), "unitPrice", "INVALID"),
    ("jane", "createOrder", order(unitPrice=OMIT, price="10", quantity=2), "price", "INVALID"),
    ("jane", "createOrder", order(currency="KESH"), "currency", "INVALID"),
    ("jane", "createOrder", order(currency="K1S"), "currency", "INVALID"),
    ("jane", "createOrder", order(currency=""), "currency", "INVALID"),
    ("jane", "createOrder", order(currency="ÄÖÜ"), "currency", "INVALID"),
    ("jane", "createOrder", order(orderDetails="x" * 2001), "orderDetails", "INVALID"),
    ("jane", "createOrder", order(item="x" * 201), "item", "INVALID"),
    ("jane", "createOrder", order(customerId="not-a-uuid"), "customerId", "INVALID"),
    ("jane", "createOrder", order(customerId="12345"), "customerId", "INVALID"),
    ("admin", "createOrder", order(customerId=UNKNOWN_ID), "customerId", "NOT_FOUND"),
    ("admin", "createOrder", order(customerCode="NO-SUCH-SHOP"), "customerCode", "NOT_FOUND"),
    ("admin", "createOrder", order(userId="no-such-subject"), "userId", "NOT_FOUND"),
    ("jane", "createOrder", order(customerCode="TAKEN1"), "customerCode", "NOT_FOUND"),
    (
        "admin",
        "createOrder",
        order(customerId=CUSTOMER_ID, customerCode="TAKEN1"),
        "customerCode",
        "INVALID",
    ),
    ("jane", "createOrder", order(idempotencyKey=""), "idempotencyKey", "INVALID"),
    ("jane", "createOrder", order(idempotencyKey="k" * 256), "idempotencyKey", "INVALID"),
    ("jane", "createOrder", order(orderDetails="Deliver\x00ASAP"), "orderDetails", "INVALID"),
    ("jane", "confirmOrder", {"id": "not-a-uuid"}, "orderId", "INVALID"),
    ("jane", "confirmOrder", {"id": "42"}, "orderId", "INVALID"),
    ("jane", "cancelOrder", {"id": "not-a-uuid"}, "orderId", "INVALID"),
    ("jane", "cancelOrder", {"id": ORDER_ID, "reason": "r" * 2001}, "reason", "INVALID"),
    ("admin", "createCustomer", customer(name="n" * 201), "name", "INVALID"),
    ("admin", "createCustomer", customer(name=""), "name", "INVALID"),
    ("admin", "createCustomer", customer(name="   "), "name", "INVALID"),
    ("admin", "createCustomer", customer(name="Wanjiru\x00Stores"), "name", "INVALID"),
    ("admin", "createCustomer", customer(phone="12345"), "phone", "INVALID"),
    ("admin", "createCustomer", customer(phone="0712 345 67"), "phone", "INVALID"),
    ("admin", "createCustomer", customer(phone="not a phone"), "phone", "INVALID"),
    ("admin", "createCustomer", customer(phone="+254 712 345 678 999"), "phone", "INVALID"),
    ("admin", "createCustomer", customer(phone="9" * 41), "phone", "INVALID"),
    ("admin", "createCustomer", customer(email="no-at-sign"), "email", "INVALID"),
    ("admin", "createCustomer", customer(code="TAKEN1"), "code", "DUPLICATE"),
    ("admin", "createCustomer", customer(code="C" * 33), "code", "INVALID"),
    ("admin", "createCustomer", customer(code="has space"), "code", "INVALID"),
    ("jane", "createCustomer", customer(), None, "FORBIDDEN"),
    ("admin", "updateCustomer", {"id": "not-a-uuid", "input": {"name": "X"}}, "id", "INVALID"),
    ("admin", "updateCustomer", {"id": UNKNOWN_ID, "input": {"name": "X"}}, None, "NOT_FOUND"),
    ("jane", "updateCustomer", {"id": CUSTOMER_ID, "input": {"name": "X"}}, None, "NOT_FOUND"),
    ("admin", "updateCustomer", {"id": CUSTOMER_ID, "input": {"phone": "123"}}, "phone", "INVALID"),
    (
        "admin",
        "updateCustomer",
        {"id": CUSTOMER_ID, "input": {"name": "n" * 201}},
        "name",
        "INVALID",
    ),
    ("admin", "updateCustomer", {"id": CUSTOMER_ID, "input": {"name": None}}, "name", "INVALID"),
]


def case_id(caller: str, mutation: str, variables: dict[str, Any], field: str | None) -> str:
    given = variables.get("input", variables)
    shown = ",".join(f"{key}={str(value)[:12]!r}" for key, value in given.items())
    return f"{caller}-{mutation}-{field}-{shown}"


PARAMS = [pytest.param(*case, id=case_id(*case[:4])) for case in CASES]


@pytest.fixture
def world(jane, admin, session):
    """Both callers provisioned, a customer with code TAKEN1 and one NEW order of Jane's."""
    jane.execute("{ me { id } }")
    admin.execute("{ me { id } }")
    taken = CustomerFactory(code="TAKEN1", name="Taken Shop")
    jane_order = OrderFactory(customer=session.get_one(Customer, uuid.UUID(JANE_SUB)))
    return {"clients": {"jane": jane, "admin": admin}, "customer": taken, "order": jane_order}


def substitute(value: Any, world: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: substitute(item, world) for key, item in value.items() if item != OMIT}
    if value == ORDER_ID:
        return str(world["order"].id)
    if value == CUSTOMER_ID:
        return str(world["customer"].id)
    return value


def snapshot(session, world) -> tuple[dict[str, int], tuple]:
    session.expire_all()
    taken = session.get_one(Customer, world["customer"].id)
    jane_order = session.get_one(Order, world["order"].id)
    return row_counts(session), (
        taken.name,
        taken.phone,
        taken.updated_at,
        jane_order.status,
        jane_order.updated_at,
    )


@pytest.mark.parametrize(("caller", "mutation", "variables", "field", "code"), PARAMS)
def test_bad_input_is_refused_in_the_payload_and_writes_nothing(
    world, session, caller, mutation, variables, field, code
):
    before = snapshot(session, world)

    response = world["clients"][caller].post(DOCUMENTS[mutation], substitute(variables, world))

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert "errors" not in body, body["errors"]
    result = body["data"][mutation]
    assert result["success"] is False
    assert (field, code) in [(e["field"], e["code"]) for e in result["fieldErrors"]]
    assert all(error["message"] for error in result["fieldErrors"])
    assert result["errors"] == [error["message"] for error in result["fieldErrors"]]
    assert result["message"] == result["errors"][0]
    assert snapshot(session, world) == before


def test_a_non_uuid_order_id_in_a_query_is_a_clear_bad_user_input(world, session):
    before = snapshot(session, world)

    response = world["clients"]["jane"].post('{ order(id: "not-a-uuid") { id } }')

    assert response.status_code == 200
    body = response.get_json()
    assert body["data"] == {"order": None}
    [error] = body["errors"]
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "field": "id",  # the argument the client gave it in
        "reason": "INVALID",
    }
    assert error["message"] == "id is not a valid order id"
    assert snapshot(session, world) == before


def test_a_non_uuid_customer_id_in_a_query_is_a_clear_bad_user_input(world):
    response = world["clients"]["admin"].post('{ customer(id: "42") { id } }')

    assert response.status_code == 200
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "id"


def test_an_unknown_status_filter_is_a_clear_bad_user_input(world):
    response = world["clients"]["jane"].post('{ myOrders(status: "shipped") { id } }')

    assert response.status_code == 200
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "status must be one of NEW, CONFIRMED, CANCELLED"


def test_a_code_with_a_nul_character_reads_as_no_customer(world):
    response = world["clients"]["admin"].post('{ customerByCode(code: "TAKEN1\\u0000") { id } }')

    assert response.status_code == 200
    assert response.get_json() == {"data": {"customerByCode": None}}


def test_a_price_that_is_not_a_number_is_a_clear_request_error(world, session):
    before = snapshot(session, world)

    response = world["clients"]["jane"].post(
        DOCUMENTS["createOrder"], {"input": {"price": "twelve hundred"}}
    )

    assert response.status_code < 500
    messages = [error["message"] for error in response.get_json()["errors"]]
    assert any("'twelve hundred' is not a decimal number" in message for message in messages)
    assert snapshot(session, world) == before


def test_a_price_literal_that_is_not_a_number_is_a_clear_request_error(world):
    response = world["clients"]["jane"].post(
        'mutation { createOrder(input: {price: "abc"}) { success } }'
    )

    assert response.status_code == 400
    messages = [error["message"] for error in response.get_json()["errors"]]
    assert any("'abc' is not a decimal number" in message for message in messages)


def test_an_overlong_subject_in_a_valid_token_is_not_a_server_error(graphql):
    response = graphql("jane", sub="s" * 300).post("{ me { id } }")

    assert response.status_code < 500, response.get_data(as_text=True)
