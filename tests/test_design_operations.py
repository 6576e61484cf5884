"""The operations documented in DESIGN.md, run verbatim, return the documented shapes."""

from __future__ import annotations

from datetime import datetime

JANE_SUB = "2c95d280-3560-4991-af5d-d592b6982eb4"

CREATE_ORDER = """
mutation {
  createOrder(input: { price: 1200.0, userId: "%s", orderDetails: "Deliver ASAP" }) {
    success message errors
    order { id totalPrice customerId status createdAt createdBy orderDetails }
  }
}
"""

CONFIRM_ORDER = """
mutation ConfirmOrder {
  confirmOrder(orderId: "%s") {
    order { id status totalPrice customerId createdAt } success message errors
  }
}
"""

MY_ORDERS = 'query GetMyOrders { myOrders(status: "confirmed") { id status totalPrice createdAt } }'


def test_create_order_as_documented(jane):
    result = jane.execute(CREATE_ORDER % JANE_SUB)["createOrder"]

    assert result["success"] is True
    assert result["errors"] == []
    order = result["order"]
    assert order["status"] == "NEW"
    assert order["totalPrice"] == 1200.0
    assert order["customerId"] == JANE_SUB
    assert order["createdBy"] == JANE_SUB
    assert order["orderDetails"] == "Deliver ASAP"
    assert datetime.fromisoformat(order["createdAt"]).tzinfo is not None


def test_confirm_order_as_documented(jane):
    order_id = jane.execute(CREATE_ORDER % JANE_SUB)["createOrder"]["order"]["id"]

    result = jane.execute(CONFIRM_ORDER % order_id)["confirmOrder"]

    assert result == {
        "order": {
            "id": order_id,
            "status": "CONFIRMED",
            "totalPrice": 1200.0,
            "customerId": JANE_SUB,
            "createdAt": result["order"]["createdAt"],
        },
        "success": True,
        "message": "Order confirmed!",
        "errors": [],
    }


def test_my_orders_filters_by_status_in_any_case_newest_first(jane):
    created = [jane.execute(CREATE_ORDER % JANE_SUB)["createOrder"]["order"] for _ in range(3)]
    for order in created[:2]:
        jane.execute(CONFIRM_ORDER % order["id"])

    mine = jane.execute(MY_ORDERS)["myOrders"]

    assert [order["id"] for order in mine] == [created[1]["id"], created[0]["id"]]
    assert {order["status"] for order in mine} == {"CONFIRMED"}
    assert set(mine[0]) == {"id", "status", "totalPrice", "createdAt"}
    upper = jane.execute(MY_ORDERS.replace('"confirmed"', '"CONFIRMED"'))["myOrders"]
    assert upper == mine


def test_login_as_documented(graphql):
    anonymous = graphql(None)
    data = anonymous.execute(
        """mutation Login($input: LoginInput!) {
          login(input: $input) { accessToken refreshToken userInfo { email userId fullName roles }
                                 success message }
        }""",
        {"input": {"username": "jane", "password": "jane"}},
    )["login"]

    assert data["success"] is True
    assert data["accessToken"]
    assert data["refreshToken"]
    user = data["userInfo"]
    assert (user["email"], user["userId"], user["fullName"]) == (
        "jane@example.com",
        JANE_SUB,
        "Jane Wanjiku",
    )
    assert "customer" in user["roles"]
    assert "admin" not in user["roles"]


def test_original_customer_operations(admin):
    created = admin.execute(
        'mutation { createCustomer(input: {name: "Amina Otieno", code: "AMINA1", '
        'phone: "0722000111"}) { success customer { id code name phone } } }'
    )["createCustomer"]
    assert created["success"] is True
    assert created["customer"]["phone"] == "+254722000111"

    by_code = admin.execute('{ customerByCode(code: "AMINA1") { id name } }')["customerByCode"]
    assert by_code == {"id": created["customer"]["id"], "name": "Amina Otieno"}

    listed = admin.execute("{ allCustomers { code } }")["allCustomers"]
    assert "AMINA1" in [customer["code"] for customer in listed]

    admin.execute(
        'mutation { createOrder(input: {customerCode: "AMINA1", price: "250.50"}) { success } }'
    )
    orders = admin.execute('{ ordersByCustomer(customerCode: "AMINA1") { totalPrice } }')
    assert orders["ordersByCustomer"] == [{"totalPrice": 250.5}]
    all_orders = admin.execute("{ allOrders { customerId } }")["allOrders"]
    assert {"customerId": created["customer"]["id"]} in all_orders
