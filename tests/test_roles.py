"""Roles: the union of realm roles and this client's roles. An admin reads and changes every
customer and order; a customer only its own, and another's order is NOT_FOUND, never FORBIDDEN."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from models.db import db
from web import create_app

JANE_SUB = "2c95d280-3560-4991-af5d-d592b6982eb4"
ADMIN_SUB = "400e2c45-bf9b-4c22-b306-aaefdbbedeb0"
BOB_SUB = "b0b5e3c1-27a4-4d7e-8f0a-3c9d1e2f4a5b"
NOT_ADMIN_REALM = {"roles": ["default-roles-donfiles", "offline_access"]}
ACCOUNT = {"account": {"roles": ["view-profile"]}}

CREATE_ORDER = """
mutation($input: CreateOrderInput!) {
  createOrder(input: $input) {
    success message fieldErrors { field code message } order { id customerId createdBy status }
  }
}
"""
PAYLOAD = "success message errors fieldErrors { field code message } order { id status }"
CONFIRM = f"mutation($id: ID!) {{ confirmOrder(orderId: $id) {{ {PAYLOAD} }} }}"
CANCEL = f"mutation($id: ID!) {{ cancelOrder(orderId: $id) {{ {PAYLOAD} }} }}"
UPDATE_CUSTOMER = """
mutation($id: ID!, $name: String) {
  updateCustomer(id: $id, input: {name: $name}) {
    success fieldErrors { field code } customer { id name }
  }
}
"""
ME = "{ me { id code } }"
ROLES = "{ userInfo { roles } }"


@pytest.fixture
def bob(graphql):
    """A second ordinary customer."""
    return graphql(
        "jane",
        sub=BOB_SUB,
        name="Bob Otieno",
        email="bob@example.com",
        phone_number="+254733000222",
        preferred_username="bob",
    )


def me(client) -> dict[str, Any]:
    return client.execute(ME)["me"]


def place_order(client, sub: str, price: str = "10") -> dict[str, Any]:
    result = client.execute(CREATE_ORDER, {"input": {"userId": sub, "price": price}})
    assert result["createOrder"]["success"] is True, result
    return result["createOrder"]["order"]


def field_codes(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["fieldErrors"]]


def is_admin(client) -> bool:
    """Whether the caller can read jane's customer record, which only jane and admins can."""
    found = client.execute("query($id: ID!) { customer(id: $id) { id } }", {"id": JANE_SUB})
    return found["customer"] is not None


# -- where roles come from --------------------------------------------------------------------


def test_admin_as_a_client_role_only_is_admin(graphql, jane):
    me(jane)
    client_admin = graphql(
        "jane",
        sub=str(uuid.uuid4()),
        realm_access=NOT_ADMIN_REALM,
        resource_access={"customer_api": {"roles": ["admin"]}, **ACCOUNT},
    )

    assert is_admin(client_admin)
    assert "admin" in client_admin.execute(ROLES)["userInfo"]["roles"]


def test_admin_as_a_realm_role_only_is_admin(graphql, jane):
    me(jane)
    realm_admin = graphql(
        "jane",
        sub=str(uuid.uuid4()),
        realm_access={"roles": ["admin"]},
        resource_access=ACCOUNT,
    )

    assert is_admin(realm_admin)


def test_admin_under_another_clients_resource_access_does_not_count(graphql, jane):
    me(jane)
    other_client_admin = graphql(
        "jane",
        sub=str(uuid.uuid4()),
        realm_access=NOT_ADMIN_REALM,
        resource_access={"other_api": {"roles": ["admin"]}, **ACCOUNT},
    )

    assert not is_admin(other_client_admin)
    assert "admin" not in other_client_admin.execute(ROLES)["userInfo"]["roles"]


def test_roles_are_the_union_of_realm_and_this_clients_roles(graphql):
    caller = graphql(
        "jane",
        sub=str(uuid.uuid4()),
        realm_access={"roles": ["realm-role"]},
        resource_access={
            "customer_api": {"roles": ["client-role"]},
            "other_api": {"roles": ["foreign-role"]},
            **ACCOUNT,
        },
    )

    roles = set(caller.execute(ROLES)["userInfo"]["roles"])

    assert {"realm-role", "client-role"} <= roles
    assert not {"foreign-role", "view-profile"} & roles


@pytest.mark.parametrize(
    ("realm_access", "resource_access"),
    [
        (["admin"], {"customer_api": ["admin"]}),
        ({"roles": "admin"}, {"customer_api": {"roles": "admin"}}),
        ({"roles": [7, None]}, "admin"),
    ],
    ids=["lists-instead-of-objects", "strings-instead-of-lists", "wrong-types"],
)
def test_misshapen_role_claims_grant_nothing_and_break_nothing(
    graphql, jane, realm_access, resource_access
):
    me(jane)
    caller = graphql(
        "jane", sub=str(uuid.uuid4()), realm_access=realm_access, resource_access=resource_access
    )

    assert caller.execute(ROLES)["userInfo"]["roles"] == []
    assert not is_admin(caller)


def test_the_admin_role_name_comes_from_config(settings, idp, session):
    application = create_app(replace(settings, admin_role="shop-admin"))
    try:
        client = application.test_client()

        def customers_seen(sub: str, **claims: Any) -> int:
            token = idp.issue_access_token("jane", sub=sub, **claims)
            response = client.post(
                "/graphql",
                json={"query": "{ allCustomers(first: 100) { id } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.get_data(as_text=True)
            return len(response.get_json()["data"]["allCustomers"])

        assert customers_seen(JANE_SUB) == 1  # jane exists from now on
        shop_admin = {"realm_access": {"roles": ["shop-admin"]}, "resource_access": ACCOUNT}
        plain_admin = {"realm_access": {"roles": ["admin"]}, "resource_access": ACCOUNT}
        assert customers_seen(str(uuid.uuid4()), **shop_admin) == 2  # jane and itself
        assert customers_seen(str(uuid.uuid4()), **plain_admin) == 1
    finally:
        with application.app_context():
            for engine in db.engines.values():
                engine.dispose()


# -- an admin sees and changes everything -----------------------------------------------------


def test_admin_reads_every_customer_and_order(admin, jane, bob):
    janes = place_order(jane, JANE_SUB)
    bobs = place_order(bob, BOB_SUB)
    jane_code = me(jane)["code"]

    customers = {
        c["id"] for c in admin.execute("{ allCustomers(first: 100) { id } }")["allCustomers"]
    }
    orders = {o["id"] for o in admin.execute("{ allOrders(first: 100) { id } }")["allOrders"]}
    by_id = admin.execute(
        "query($a: ID!, $b: ID!, $c: ID!) { a: order(id: $a) { id } b: order(id: $b) { id } "
        "c: customer(id: $c) { id } }",
        {"a": janes["id"], "b": bobs["id"], "c": BOB_SUB},
    )
    by_code = admin.execute(
        "query($code: String!) { customerByCode(code: $code) { id } "
        "ordersByCustomer(customerCode: $code) { id } }",
        {"code": jane_code},
    )

    assert {JANE_SUB, BOB_SUB} <= customers
    assert {janes["id"], bobs["id"]} <= orders
    assert by_id == {"a": {"id": janes["id"]}, "b": {"id": bobs["id"]}, "c": {"id": BOB_SUB}}
    assert by_code == {
        "customerByCode": {"id": JANE_SUB},
        "ordersByCustomer": [{"id": janes["id"]}],
    }


def test_admin_changes_another_customers_record(admin, jane):
    me(jane)

    result = admin.execute(UPDATE_CUSTOMER, {"id": JANE_SUB, "name": "Jane W. Kamau"})

    assert result["updateCustomer"]["success"] is True
    assert result["updateCustomer"]["customer"] == {"id": JANE_SUB, "name": "Jane W. Kamau"}


def test_admin_orders_for_another_customer_as_itself(admin, jane):
    me(jane)

    order = place_order(admin, JANE_SUB)

    assert order["customerId"] == JANE_SUB
    assert order["createdBy"] == ADMIN_SUB


def test_admin_confirms_and_cancels_another_customers_orders(admin, jane):
    first = place_order(jane, JANE_SUB)
    second = place_order(jane, JANE_SUB)

    confirmed = admin.execute(CONFIRM, {"id": first["id"]})["confirmOrder"]
    cancelled_new = admin.execute(CANCEL, {"id": second["id"]})["cancelOrder"]
    cancelled_confirmed = admin.execute(CANCEL, {"id": first["id"]})["cancelOrder"]

    assert (confirmed["success"], confirmed["order"]["status"]) == (True, "CONFIRMED")
    assert (cancelled_new["success"], cancelled_new["order"]["status"]) == (True, "CANCELLED")
    assert cancelled_confirmed["order"] == {"id": first["id"], "status": "CANCELLED"}


# -- a customer sees and changes only its own -------------------------------------------------


def test_customer_lists_only_its_own_customer_record(jane, bob, admin):
    me(admin)
    me(bob)

    listed = jane.execute("{ allCustomers(first: 100) { id } customers { nodes { id } } }")

    assert listed == {
        "allCustomers": [{"id": JANE_SUB}],
        "customers": {"nodes": [{"id": JANE_SUB}]},
    }


def test_customer_lists_only_its_own_orders(jane, bob):
    janes = place_order(jane, JANE_SUB)
    place_order(bob, BOB_SUB)

    listed = jane.execute(
        "{ allOrders(first: 100) { id } myOrders { id } orders { nodes { id } } }"
    )

    assert listed == {
        "allOrders": [{"id": janes["id"]}],
        "myOrders": [{"id": janes["id"]}],
        "orders": {"nodes": [{"id": janes["id"]}]},
    }


def test_another_customers_order_reads_as_null(jane, bob):
    bobs = place_order(bob, BOB_SUB)

    body = jane.post("query($id: ID!) { order(id: $id) { id } }", {"id": bobs["id"]}).get_json()

    assert body == {"data": {"order": None}}


def test_another_customers_records_read_as_nothing(jane, bob):
    bob_code = me(bob)["code"]
    place_order(bob, BOB_SUB)

    found = jane.execute(
        "query($id: ID!, $code: String!) { customer(id: $id) { id } "
        "customerByCode(code: $code) { id } ordersByCustomer(customerCode: $code) { id } "
        "orders(customerId: $id) { nodes { id } } }",
        {"id": BOB_SUB, "code": bob_code},
    )

    assert found == {
        "customer": None,
        "customerByCode": None,
        "ordersByCustomer": [],
        "orders": {"nodes": []},
    }


@pytest.mark.parametrize(
    ("mutation", "field"), [(CONFIRM, "confirmOrder"), (CANCEL, "cancelOrder")]
)
def test_changing_another_customers_order_is_not_found_and_changes_nothing(
    jane, bob, mutation, field
):
    bobs = place_order(bob, BOB_SUB)

    result = jane.execute(mutation, {"id": bobs["id"]})[field]

    assert result["success"] is False
    assert result["order"] is None
    assert field_codes(result) == ["NOT_FOUND"]
    still = bob.execute("query($id: ID!) { order(id: $id) { status } }", {"id": bobs["id"]})
    assert still["order"]["status"] == "NEW"


@pytest.mark.parametrize(
    ("mutation", "field"), [(CONFIRM, "confirmOrder"), (CANCEL, "cancelOrder")]
)
def test_another_customers_order_answers_exactly_like_a_missing_one(jane, bob, mutation, field):
    bobs = place_order(bob, BOB_SUB)

    foreign = jane.execute(mutation, {"id": bobs["id"]})[field]
    missing = jane.execute(mutation, {"id": str(uuid.uuid4())})[field]

    assert foreign == missing


def test_updating_another_customer_is_not_found(jane, bob, admin):
    me(bob)

    result = jane.execute(UPDATE_CUSTOMER, {"id": BOB_SUB, "name": "Mallory"})["updateCustomer"]

    assert result["success"] is False
    assert field_codes(result) == ["NOT_FOUND"]
    bobs = admin.execute("query($id: ID!) { customer(id: $id) { name } }", {"id": BOB_SUB})
    assert bobs["customer"] == {"name": "Bob Otieno"}


@pytest.mark.parametrize("reference", ["userId", "customerId", "customerCode"])
def test_ordering_for_another_customer_is_not_found(jane, bob, reference):
    bob_record = me(bob)
    value = {"userId": BOB_SUB, "customerId": BOB_SUB, "customerCode": bob_record["code"]}

    result = jane.execute(CREATE_ORDER, {"input": {reference: value[reference], "price": "10"}})

    payload = result["createOrder"]
    assert payload["success"] is False
    assert payload["order"] is None
    assert field_codes(payload) == ["NOT_FOUND"]
    assert bob.execute("{ myOrders { id } }")["myOrders"] == []


def test_customer_confirms_and_cancels_its_own_new_orders(jane):
    first = place_order(jane, JANE_SUB)
    second = place_order(jane, JANE_SUB)

    confirmed = jane.execute(CONFIRM, {"id": first["id"]})["confirmOrder"]
    cancelled = jane.execute(CANCEL, {"id": second["id"]})["cancelOrder"]

    assert confirmed["order"] == {"id": first["id"], "status": "CONFIRMED"}
    assert cancelled["order"] == {"id": second["id"], "status": "CANCELLED"}


def test_customer_cannot_cancel_its_own_confirmed_order(jane):
    order = place_order(jane, JANE_SUB)
    jane.execute(CONFIRM, {"id": order["id"]})

    result = jane.execute(CANCEL, {"id": order["id"]})["cancelOrder"]

    assert result["success"] is False
    assert field_codes(result) == ["INVALID_STATE"]


def test_customer_cannot_create_customers(jane):
    result = jane.execute(
        'mutation { createCustomer(input: {name: "X"}) { success fieldErrors { code } } }'
    )

    assert result["createCustomer"] == {"success": False, "fieldErrors": [{"code": "FORBIDDEN"}]}


def test_customer_changes_its_own_record(jane):
    me(jane)

    result = jane.execute(UPDATE_CUSTOMER, {"id": JANE_SUB, "name": "Jane Wanjiku Mwangi"})

    assert result["updateCustomer"]["customer"] == {"id": JANE_SUB, "name": "Jane Wanjiku Mwangi"}
