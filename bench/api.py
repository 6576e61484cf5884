"""What the benchmark sends the service: its users and its GraphQL request bodies."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from bench.load import PLACEHOLDER

REALM = "donfiles"
CLIENT_ID = "customer_api"

CREATE_ORDER = (
    "mutation CreateOrder($input: CreateOrderInput!) { createOrder(input: $input) "
    "{ success replayed order { id status totalPrice } } }"
)
CONFIRM_ORDER = (
    "mutation ConfirmOrder($id: ID!) { confirmOrder(orderId: $id) { success order { id status } } }"
)
MY_ORDERS = (
    "query MyOrders($first: Int) { myOrders(first: $first) { id status totalPrice createdAt } }"
)
ME = "query Me { me { id phone } }"
SUCCESS = '"success":true'
MY_ORDERS_MARKER = '"myOrders":[{'


def body(query: str, variables: dict[str, Any]) -> str:
    """A GraphQL request body, compact as a client sends it."""
    return json.dumps({"query": query, "variables": variables}, separators=(",", ":"))


CREATE_TEMPLATE = body(
    CREATE_ORDER,
    {"input": {"price": "1200.00", "orderDetails": "Deliver ASAP", "idempotencyKey": PLACEHOLDER}},
)
CONFIRM_TEMPLATE = body(CONFIRM_ORDER, {"id": PLACEHOLDER})
MY_ORDERS_BODY = body(MY_ORDERS, {"first": 20})


@dataclass(frozen=True)
class BenchUser:
    """A user of the bench realm; its customer record is created by its first request."""

    role: str
    phone: str
    realm_role: str = "customer"

    @property
    def username(self) -> str:
        return f"bench-{self.role}"

    @property
    def sub(self) -> str:
        # The service uses a UUID subject as the customer's id.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"order-service-bench/{self.role}"))

    @property
    def customer_id(self) -> uuid.UUID:
        return uuid.UUID(self.sub)

    def as_idp_user(self, password: str) -> dict[str, Any]:
        return {
            "username": self.username,
            "password": password,
            "sub": self.sub,
            "name": f"Bench {self.role.title()}",
            "email": f"{self.username}@example.com",
            "phone_number": self.phone,
            "realm_roles": [self.realm_role],
            "client_roles": {CLIENT_ID: [self.realm_role]},
        }


USERS = {
    user.role: user
    for user in (
        BenchUser("create", "+254711000001"),
        BenchUser("confirm", "+254711000002"),
        BenchUser("small", "+254711000003"),
        BenchUser("large", "+254711000004"),
        BenchUser("drain", "+254711000005"),
        # Sends the hostile documents that need rows to work on (see bench/documents.py).
        BenchUser("admin", "+254711000006", realm_role="admin"),
        # Places the orders whose SMS the order-to-SMS phase times, to a phone of its own.
        BenchUser("sms", "+254711000007"),
    )
}
