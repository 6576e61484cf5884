"""Customers created on first sight: the first authenticated request of a `sub` creates its
customer from the token's claims, later requests keep it in step, concurrent first requests
create exactly one."""

from __future__ import annotations

import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select

from models.customers import Customer
from models.db import db
from models.notifications import Notification
from models.orders import Order

JANE_SUB = "2c95d280-3560-4991-af5d-d592b6982eb4"
CODE = re.compile(r"^C[0-9A-HJKMNP-TV-Z]{8}$")  # "C" and eight Crockford base32 characters
ME = "{ me { id code name email phone } }"
CREATE_ORDER = """
mutation($input: CreateOrderInput!) {
  createOrder(input: $input) { success fieldErrors { field code } order { customerId createdBy } }
}
"""


def newcomer(graphql, sub: str | None = None, **claims: Any):
    """A client for a user the service has never seen."""
    profile = {
        "name": "Achieng Odhiambo",
        "email": "achieng@example.com",
        "phone_number": "0712 345 678",
        "preferred_username": "achieng",
    }
    return graphql("jane", sub=sub or str(uuid.uuid4()), **{**profile, **claims})


def me(client) -> dict[str, Any]:
    return client.execute(ME)["me"]


# -- first sight --------------------------------------------------------------------------------


def test_first_request_creates_the_customer_from_the_claims(graphql):
    sub = str(uuid.uuid4())

    record = me(newcomer(graphql, sub, email="Achieng@Example.COM"))

    assert record["id"] == sub
    assert CODE.match(record["code"]), record["code"]
    assert record["name"] == "Achieng Odhiambo"
    assert record["email"] == "Achieng@example.com"
    assert record["phone"] == "+254712345678"


def test_each_new_customer_gets_its_own_code(graphql):
    codes = {me(newcomer(graphql))["code"] for _ in range(5)}

    assert len(codes) == 5


def test_first_request_is_visible_to_an_admin(graphql, admin):
    sub = str(uuid.uuid4())
    me(newcomer(graphql, sub))

    found = admin.execute("query($id: ID!) { customer(id: $id) { id name } }", {"id": sub})

    assert found["customer"] == {"id": sub, "name": "Achieng Odhiambo"}


def test_a_sub_that_is_not_a_uuid_gets_a_generated_id(graphql):
    sub = "auth0|5f7c8ec7c33c6c004bbafe82"
    client = newcomer(graphql, sub)

    record = me(client)
    order = client.execute(CREATE_ORDER, {"input": {"userId": sub, "price": 10}})["createOrder"]

    assert uuid.UUID(record["id"])
    assert order["success"] is True
    assert order["order"] == {"customerId": record["id"], "createdBy": sub}


def test_a_sub_differing_only_in_letter_case_is_another_customer(graphql, jane, admin):
    janes = me(jane)

    record = me(newcomer(graphql, JANE_SUB.upper(), name="Impostor"))

    assert record["id"] != JANE_SUB
    assert record["name"] == "Impostor"
    still = admin.execute("query($id: ID!) { customer(id: $id) { name } }", {"id": JANE_SUB})
    assert still["customer"]["name"] == "Jane Wanjiku"
    assert janes["id"] == JANE_SUB


def test_first_request_creating_an_order_orders_for_the_new_customer(graphql):
    sub = str(uuid.uuid4())
    client = newcomer(graphql, sub)

    result = client.execute(CREATE_ORDER, {"input": {"userId": sub, "price": 10}})["createOrder"]

    assert result["success"] is True
    assert result["order"] == {"customerId": sub, "createdBy": sub}


def test_missing_name_claim_still_gives_a_named_customer(graphql):
    record = me(newcomer(graphql, name=None))

    assert record["name"].strip()


# -- later requests -----------------------------------------------------------------------------


def test_later_request_with_changed_claims_updates_the_record(graphql):
    sub = str(uuid.uuid4())
    first = me(newcomer(graphql, sub))

    later = me(
        newcomer(
            graphql,
            sub,
            name="Achieng Otieno",
            email="achieng.otieno@example.com",
            phone_number="+254 733 000 222",
        )
    )

    assert later == {
        "id": first["id"],
        "code": first["code"],
        "name": "Achieng Otieno",
        "email": "achieng.otieno@example.com",
        "phone": "+254733000222",
    }


def test_later_request_with_the_same_claims_changes_nothing(graphql):
    sub = str(uuid.uuid4())
    first = newcomer(graphql, sub).execute("{ me { id code updatedAt } }")["me"]

    later = newcomer(graphql, sub).execute("{ me { id code updatedAt } }")["me"]

    assert later == first


def test_repeated_requests_with_one_token_look_the_customer_up_no_more(graphql, app):
    client = newcomer(graphql)
    me(client)  # first sight: the customer is created
    me(client)  # found, with nothing to change: remembered for this token
    statements: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        result = client.execute(CREATE_ORDER, {"input": {"price": 10}})["createOrder"]
    finally:
        event.remove(db.engine, "before_cursor_execute", note)

    assert result["success"] is True
    assert not [sql for sql in statements if "FROM customers" in sql], statements


def test_a_phone_edited_while_a_token_is_in_use_gets_the_next_sms(graphql, session):
    sub = str(uuid.uuid4())
    client = newcomer(graphql, sub)
    me(client)
    me(client)  # remembered for this token from here on

    edited = client.execute(
        'mutation($id: ID!) { updateCustomer(id: $id, input: {phone: "0733 000 222"}) '
        "{ success } }",
        {"id": sub},
    )
    placed = client.execute(CREATE_ORDER, {"input": {"price": 10}})["createOrder"]
    info = client.execute("{ userInfo { phone } }")["userInfo"]

    assert edited["updateCustomer"]["success"] is True
    assert placed["success"] is True
    phones = session.scalars(
        select(Notification.phone).join(Order).where(Order.customer_id == uuid.UUID(sub))
    ).all()
    assert phones == ["+254733000222"]
    assert info["phone"] == "+254733000222"


# -- claims we cannot use -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    ["not a phone", "12", "+999 1234", "0712 345 678 999 000 111 222 333 444 555 666 777"],
)
def test_invalid_phone_claim_on_first_sight_does_not_break_the_request(graphql, phone):
    record = me(newcomer(graphql, phone_number=phone))

    assert record["phone"] is None
    assert record["name"] == "Achieng Odhiambo"
    assert record["email"] == "achieng@example.com"


def test_invalid_phone_claim_later_keeps_the_stored_phone(graphql):
    sub = str(uuid.uuid4())
    me(newcomer(graphql, sub))

    record = me(newcomer(graphql, sub, phone_number="call me maybe", name="Achieng O."))

    assert record["phone"] == "+254712345678"
    assert record["name"] == "Achieng O."


def test_phone_claim_sent_as_a_json_number_does_not_break_the_request(graphql):
    # Keycloak's attribute mappers can be set to emit a claim as a JSON number ("long").
    response = newcomer(graphql, phone_number=254712345678).post(ME)

    assert response.status_code == 200, response.get_data(as_text=True)
    record = response.get_json()["data"]["me"]
    assert record["phone"] in (None, "+254712345678")


def test_invalid_email_claim_is_dropped(graphql):
    record = me(newcomer(graphql, email="not-an-email"))

    assert record["email"] is None
    assert record["phone"] == "+254712345678"


def test_overlong_name_claim_is_dropped(graphql):
    record = me(newcomer(graphql, name="A" * 500))

    assert record["name"].strip()
    assert len(record["name"]) <= 200


# -- concurrent first requests, with real commits ---------------------------------------------


def concurrently(app: Flask, token: str, query: str, variables: dict, count: int) -> list[Any]:
    """`count` requests with the same token, released together from separate threads."""
    barrier = threading.Barrier(count)

    def send(_: int):
        client = app.test_client()  # one client per thread
        barrier.wait()
        return client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(send, range(count)))


def count_rows(app: Flask, model: type, *where: Any) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.mark.parametrize("count", [2, 10])
def test_concurrent_first_requests_create_exactly_one_customer(app, idp, committed, count):
    sub = str(uuid.uuid4())
    token = idp.issue_access_token("jane", sub=sub, name="Njeri Mwangi", email="njeri@example.com")

    responses = concurrently(app, token, "{ me { id code } }", {}, count)

    assert [r.status_code for r in responses] == [200] * count, [
        r.get_data(as_text=True) for r in responses if r.status_code != 200
    ]
    records = [r.get_json()["data"]["me"] for r in responses]
    assert {record["id"] for record in records} == {sub}
    assert len({record["code"] for record in records}) == 1
    assert count_rows(app, Customer, Customer.oidc_subject == sub) == 1


def test_concurrent_first_orders_all_go_to_one_new_customer(app, idp, committed):
    sub = str(uuid.uuid4())
    token = idp.issue_access_token("jane", sub=sub, name="Kamau Njoroge")

    responses = concurrently(app, token, CREATE_ORDER, {"input": {"userId": sub, "price": 10}}, 10)

    payloads = [r.get_json()["data"]["createOrder"] for r in responses]
    assert [p["success"] for p in payloads] == [True] * 10, payloads
    assert {(p["order"]["customerId"], p["order"]["createdBy"]) for p in payloads} == {(sub, sub)}
    assert count_rows(app, Customer, Customer.oidc_subject == sub) == 1
    assert count_rows(app, Order, Order.customer_id == uuid.UUID(sub)) == 10
