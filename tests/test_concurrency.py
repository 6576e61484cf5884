"""Concurrent requests on separate connections with real commits: state changes, idempotency
keys, generated codes and first-sight provisioning each have exactly one winner."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from models import Customer, Order, OrderEvent
from models.db import db
from tests.factories import JANE_SUB

THREADS = 16  # the app's pool holds 10 + 10 connections
CREATE_ORDER = """
mutation($input: CreateOrderInput!) {
  createOrder(input: $input) { success replayed fieldErrors { field code } order { id } }
}
"""
CONFIRM = """
mutation($id: ID!) {
  confirmOrder(orderId: $id) { success message fieldErrors { field code } order { status } }
}
"""
CANCEL = """
mutation($id: ID!) {
  cancelOrder(orderId: $id) { success message fieldErrors { field code } order { status } }
}
"""


@pytest.fixture
def call(app, idp, committed):
    """`call(username, document, variables, **claims)` posts on a fresh test client, so every
    request has its own app context, session and connection; fails on GraphQL errors."""

    def post(username: str, document: str, variables: dict | None = None, **claims: Any):
        token = idp.issue_access_token(username, **claims)
        response = app.test_client().post(
            "/graphql",
            json={"query": document, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    return post


def all_at_once(count: int, request) -> list[Any]:
    """Run `request(n)` for n in range(count) on THREADS threads released together."""
    start = threading.Event()

    def run(n: int):
        start.wait()
        return request(n)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(run, n) for n in range(count)]
        start.set()
        return [future.result() for future in futures]


def scalar(app, statement):
    with app.app_context():
        return db.session.scalar(statement)


def test_fifty_concurrent_confirms_give_one_confirmation(app, call):
    order_id = call("jane", CREATE_ORDER, {"input": {"unitPrice": "500"}})["createOrder"]["order"][
        "id"
    ]

    results = all_at_once(50, lambda _: call("jane", CONFIRM, {"id": order_id})["confirmOrder"])

    winners = [result for result in results if result["success"]]
    losers = [result for result in results if not result["success"]]
    assert len(winners) == 1
    assert winners[0]["order"] == {"status": "CONFIRMED"}
    assert len(losers) == 49
    assert all(r["fieldErrors"] == [{"field": "orderId", "code": "INVALID_STATE"}] for r in losers)
    assert {r["message"] for r in losers} == {
        "order is CONFIRMED; only a NEW order can be confirmed"
    }
    events = call(
        "jane", "query($id: ID!) { order(id: $id) { events { type } } }", {"id": order_id}
    )
    assert Counter(event["type"] for event in events["order"]["events"]) == {
        "CREATED": 1,
        "CONFIRMED": 1,
    }


def test_concurrent_confirms_and_cancels_have_one_winner(app, call):
    order_id = call("jane", CREATE_ORDER, {"input": {"unitPrice": "500"}})["createOrder"]["order"][
        "id"
    ]

    results = all_at_once(
        THREADS,
        lambda n: next(iter(call("jane", (CONFIRM, CANCEL)[n % 2], {"id": order_id}).values())),
    )

    [winner] = [result for result in results if result["success"]]
    final = winner["order"]["status"]
    stored = scalar(app, select(Order.status).where(Order.id == uuid.UUID(order_id)))
    assert stored == final
    transitions = scalar(
        app,
        select(func.count())
        .select_from(OrderEvent)
        .where(OrderEvent.order_id == uuid.UUID(order_id), OrderEvent.type != "CREATED"),
    )
    assert transitions == 1
    losers = [result for result in results if not result["success"]]
    assert all(r["fieldErrors"] == [{"field": "orderId", "code": "INVALID_STATE"}] for r in losers)


def test_concurrent_duplicates_with_one_idempotency_key_create_one_order(app, call):
    variables = {"input": {"unitPrice": "75.50", "quantity": 2, "idempotencyKey": "checkout-7"}}

    results = all_at_once(THREADS, lambda _: call("jane", CREATE_ORDER, variables)["createOrder"])

    assert all(result["success"] for result in results)
    assert len({result["order"]["id"] for result in results}) == 1
    assert sorted(result["replayed"] for result in results) == [False] + [True] * (THREADS - 1)
    count = select(func.count()).select_from(Order).where(Order.created_by == JANE_SUB)
    assert scalar(app, count) == 1


def test_concurrent_creates_without_codes_all_get_unique_codes(app, call):
    document = """mutation($name: String!) { createCustomer(input: {name: $name}) {
        success customer { code } } }"""

    results = all_at_once(
        THREADS * 3, lambda n: call("admin", document, {"name": f"Shop {n}"})["createCustomer"]
    )

    assert all(result["success"] for result in results)
    codes = [result["customer"]["code"] for result in results]
    assert len(set(codes)) == THREADS * 3


def test_a_new_users_concurrent_first_requests_make_one_customer(app, call):
    subject = str(uuid.uuid4())

    results = all_at_once(
        THREADS, lambda _: call("jane", "{ me { id } }", sub=subject, name="New Shopper")
    )

    assert {result["me"]["id"] for result in results} == {subject}
    count = select(func.count()).select_from(Customer).where(Customer.oidc_subject == subject)
    assert scalar(app, count) == 1
