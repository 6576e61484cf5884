"""Orders through GraphQL: the richer input, exact money, state changes, who may see and
change what, and idempotent creation."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from models import Customer, Order, placing
from models.actors import Actor
from models.db import db
from models.notifications import Notification
from tests.clients import GraphQLClient
from tests.factories import ADMIN_SUB, JANE_SUB, CustomerFactory, OrderFactory, row_counts
from tests.sms_support import publications_of, wait_for

ORDER_FIELDS = """
  id customerId item orderDetails quantity status createdBy currency totalPrice
  unitPrice { amount currency } total { amount currency }
"""
CREATE = f"""
mutation Create($input: CreateOrderInput!) {{
  createOrder(input: $input) {{
    success message errors replayed
    fieldErrors {{ field code message }}
    order {{ {ORDER_FIELDS} }}
  }}
}}
"""
CONFIRM = """
mutation Confirm($id: ID!) {
  confirmOrder(orderId: $id) {
    success message errors fieldErrors { field code message } order { id status }
  }
}
"""
CANCEL = """
mutation Cancel($id: ID!, $reason: String) {
  cancelOrder(orderId: $id, reason: $reason) {
    success message errors fieldErrors { field code message } order { id status }
  }
}
"""
ORDER = """
query Order($id: ID!) {
  order(id: $id) { id status events { type actor data } }
}
"""


@pytest.fixture
def jane_customer(jane, session) -> Customer:
    """Jane's customer record, provisioned by her first request."""
    jane.execute("{ me { id } }")
    return session.get_one(Customer, uuid.UUID(JANE_SUB))


def create(client, **fields):
    return client.execute(CREATE, {"input": fields})["createOrder"]


def field_errors(payload) -> list[tuple[str | None, str]]:
    return [(error["field"], error["code"]) for error in payload["fieldErrors"]]


# --- creating -------------------------------------------------------------------------------


def test_unit_price_times_quantity_is_the_total_in_kes_by_default(jane):
    result = create(jane, item="Maize flour 2kg", quantity=3, unitPrice="150.50")

    assert result["success"] is True
    assert result["fieldErrors"] == []
    order = result["order"]
    assert order["item"] == "Maize flour 2kg"
    assert order["quantity"] == 3
    assert order["unitPrice"] == {"amount": "150.50", "currency": "KES"}
    assert order["total"] == {"amount": "451.50", "currency": "KES"}
    assert order["totalPrice"] == 451.5
    assert order["currency"] == "KES"
    assert order["status"] == "NEW"
    assert order["customerId"] == JANE_SUB
    assert order["createdBy"] == JANE_SUB


def test_currency_is_upper_cased(jane):
    order = create(jane, unitPrice="10", currency="usd")["order"]

    assert order["total"] == {"amount": "10.00", "currency": "USD"}


def test_admin_orders_for_a_customer_by_id(admin):
    customer = CustomerFactory()

    order = create(admin, customerId=str(customer.id), unitPrice="99.99")["order"]

    assert order["customerId"] == str(customer.id)
    assert order["createdBy"] == ADMIN_SUB


def test_admin_orders_for_a_customer_by_code(admin):
    customer = CustomerFactory(code="DUKA42")

    order = create(admin, customerCode="DUKA42", unitPrice="5")["order"]

    assert order["customerId"] == str(customer.id)


def test_admin_orders_for_a_user_by_subject(admin, jane_customer):
    order = create(admin, userId=JANE_SUB, price="700")["order"]

    assert order["customerId"] == str(jane_customer.id)
    assert order["createdBy"] == ADMIN_SUB


def test_customer_names_itself_by_its_own_code(jane, jane_customer):
    order = create(jane, customerCode=jane_customer.code, unitPrice="1")["order"]

    assert order["customerId"] == JANE_SUB


@pytest.mark.parametrize("field", ["customerId", "customerCode", "userId"])
def test_customer_cannot_order_for_another_customer(jane, jane_customer, session, field):
    other = CustomerFactory(oidc_subject=str(uuid.uuid4()))
    reference = {"customerId": str(other.id), "customerCode": other.code}.get(
        field, other.oidc_subject
    )
    before = row_counts(session)

    result = create(jane, unitPrice="10.00", **{field: reference})

    assert result["success"] is False
    assert result["order"] is None
    assert field_errors(result) == [(field, "NOT_FOUND")]
    assert row_counts(session) == before


def test_creating_an_order_records_a_created_event(jane):
    order_id = create(jane, unitPrice="20")["order"]["id"]

    events = jane.execute(ORDER, {"id": order_id})["order"]["events"]

    assert [(event["type"], event["actor"]) for event in events] == [("CREATED", JANE_SUB)]


def test_a_new_order_answers_every_field_as_a_later_read_does(jane):
    everything = """
      id customerId customer { id } item orderDetails quantity currency status createdBy
      createdAt updatedAt cursor totalPrice unitPrice { amount currency }
      total { amount currency } events { type actor data } notifications { kind status }
    """
    created = jane.execute(
        f"mutation Create($input: CreateOrderInput!) {{ createOrder(input: $input) "
        f"{{ success order {{ {everything} }} }} }}",
        {"input": {"item": "Maize", "orderDetails": "Gate B", "quantity": 2, "unitPrice": "50"}},
    )["createOrder"]

    read = jane.execute(
        f"query Order($id: ID!) {{ order(id: $id) {{ {everything} }} }}",
        {"id": created["order"]["id"]},
    )["order"]

    assert created["success"] is True
    assert created["order"] == read
    assert read["customer"]["id"] == read["customerId"] == JANE_SUB
    assert (read["item"], read["orderDetails"], read["total"]["amount"]) == (
        "Maize",
        "Gate B",
        "100.00",
    )
    assert [event["type"] for event in read["events"]] == ["CREATED"]
    assert [notification["kind"] for notification in read["notifications"]] == ["ORDER_PLACED"]


# --- money ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit_price", "quantity", "total"),
    [
        ("0.10", 3, "0.30"),
        ("0.01", 1, "0.01"),
        ("999999999.99", 1, "999999999.99"),
        ("1000000000", 1, "1000000000.00"),
        ("33.33", 3, "99.99"),
        ("12.5", 2, "25.00"),
        ("7", 1, "7.00"),
    ],
)
def test_money_round_trips_exactly(jane, unit_price, quantity, total):
    order = create(jane, unitPrice=unit_price, quantity=quantity)["order"]

    assert order["total"]["amount"] == total
    assert Decimal(order["unitPrice"]["amount"]) == Decimal(unit_price)
    assert order["totalPrice"] == float(total)


def test_money_is_stored_as_exact_decimals(jane, session):
    order_id = create(jane, unitPrice="0.10", quantity=3)["order"]["id"]

    stored = session.get_one(Order, uuid.UUID(order_id))

    assert stored.total == Decimal("0.30")
    assert stored.unit_price == Decimal("0.10")


def test_price_literal_1200_point_0_is_1200_00(jane):
    result = jane.execute(
        "mutation { createOrder(input: {price: 1200.0}) { order { total { amount } totalPrice } } }"
    )["createOrder"]

    assert result["order"] == {"total": {"amount": "1200.00"}, "totalPrice": 1200.0}


def test_float_variable_with_two_decimals_is_exact(jane):
    order = create(jane, unitPrice=0.1, quantity=3)["order"]

    assert order["total"]["amount"] == "0.30"


def test_float_variable_with_binary_rounding_noise_is_refused(jane, jane_customer, session):
    before = row_counts(session)

    result = create(jane, unitPrice=0.1 + 0.2)

    assert result["success"] is False
    assert field_errors(result) == [("unitPrice", "INVALID")]
    assert row_counts(session) == before


@pytest.mark.parametrize("price", ["0.001", "10.999", "1e-3"])
def test_more_than_two_decimals_is_refused(jane, jane_customer, session, price):
    before = row_counts(session)

    result = create(jane, unitPrice=price)

    assert result["success"] is False
    assert field_errors(result) == [("unitPrice", "INVALID")]
    assert "decimal" in result["message"]
    assert row_counts(session) == before


# --- confirming and cancelling --------------------------------------------------------------


def test_confirm_moves_a_new_order_to_confirmed_with_an_event(jane):
    order_id = create(jane, unitPrice="20")["order"]["id"]

    result = jane.execute(CONFIRM, {"id": order_id})["confirmOrder"]

    assert result["success"] is True
    assert result["message"] == "Order confirmed!"
    assert result["order"] == {"id": order_id, "status": "CONFIRMED"}
    events = jane.execute(ORDER, {"id": order_id})["order"]["events"]
    assert [(event["type"], event["actor"]) for event in events] == [
        ("CREATED", JANE_SUB),
        ("CONFIRMED", JANE_SUB),
    ]


@pytest.mark.parametrize("status", ["CONFIRMED", "CANCELLED"])
def test_confirming_an_order_that_is_not_new_is_invalid_state(jane, jane_customer, session, status):
    order = OrderFactory(customer=jane_customer, status=status)
    before = row_counts(session)

    result = jane.execute(CONFIRM, {"id": str(order.id)})["confirmOrder"]

    assert result["success"] is False
    assert result["order"] is None
    assert field_errors(result) == [("orderId", "INVALID_STATE")]
    assert result["message"] == f"order is {status}; only a NEW order can be confirmed"
    assert result["errors"] == [result["message"]]
    assert row_counts(session) == before
    assert jane.execute(ORDER, {"id": str(order.id)})["order"]["status"] == status


def test_second_confirm_is_refused_and_adds_no_event(jane):
    order_id = create(jane, unitPrice="20")["order"]["id"]
    jane.execute(CONFIRM, {"id": order_id})

    again = jane.execute(CONFIRM, {"id": order_id})["confirmOrder"]

    assert field_errors(again) == [("orderId", "INVALID_STATE")]
    events = jane.execute(ORDER, {"id": order_id})["order"]["events"]
    assert [event["type"] for event in events] == ["CREATED", "CONFIRMED"]


def test_customer_cancels_its_own_new_order_with_a_reason(jane):
    order_id = create(jane, unitPrice="20")["order"]["id"]

    result = jane.execute(CANCEL, {"id": order_id, "reason": "Ordered twice"})["cancelOrder"]

    assert result["success"] is True
    assert result["order"] == {"id": order_id, "status": "CANCELLED"}
    events = jane.execute(ORDER, {"id": order_id})["order"]["events"]
    assert [(event["type"], event["actor"]) for event in events] == [
        ("CREATED", JANE_SUB),
        ("CANCELLED", JANE_SUB),
    ]
    assert "Ordered twice" in events[-1]["data"]


def test_customer_cannot_cancel_its_confirmed_order(jane, jane_customer):
    order = OrderFactory(customer=jane_customer, status="CONFIRMED")

    result = jane.execute(CANCEL, {"id": str(order.id)})["cancelOrder"]

    assert result["success"] is False
    assert field_errors(result) == [("orderId", "INVALID_STATE")]
    # Not "only a NEW order can be cancelled": an admin can cancel it, and the customer
    # should know whom to ask.
    assert result["message"] == "order is CONFIRMED; a CONFIRMED order is cancelled by an admin"
    assert jane.execute(ORDER, {"id": str(order.id)})["order"]["status"] == "CONFIRMED"


def test_admin_cancels_a_confirmed_order(admin, jane):
    order_id = create(jane, unitPrice="20")["order"]["id"]
    jane.execute(CONFIRM, {"id": order_id})

    result = admin.execute(CANCEL, {"id": order_id})["cancelOrder"]

    assert result["success"] is True
    assert result["order"]["status"] == "CANCELLED"
    events = jane.execute(ORDER, {"id": order_id})["order"]["events"]
    assert [(event["type"], event["actor"]) for event in events] == [
        ("CREATED", JANE_SUB),
        ("CONFIRMED", JANE_SUB),
        ("CANCELLED", ADMIN_SUB),
    ]


def test_cancelling_a_cancelled_order_is_invalid_state_even_for_an_admin(admin):
    order = OrderFactory(status="CANCELLED")

    result = admin.execute(CANCEL, {"id": str(order.id)})["cancelOrder"]

    assert field_errors(result) == [("orderId", "INVALID_STATE")]
    assert result["message"] == "order is CANCELLED; only a NEW or CONFIRMED order can be cancelled"


def test_admin_confirms_any_customers_order(admin):
    order = OrderFactory()

    result = admin.execute(CONFIRM, {"id": str(order.id)})["confirmOrder"]

    assert result["success"] is True
    assert result["order"]["status"] == "CONFIRMED"


# --- another customer's order ---------------------------------------------------------------


@pytest.mark.parametrize("mutation", [CONFIRM, CANCEL])
def test_another_customers_order_is_not_found_never_forbidden(
    jane, jane_customer, session, mutation
):
    order = OrderFactory()
    before = row_counts(session)

    result = next(iter(jane.execute(mutation, {"id": str(order.id)}).values()))

    assert result["success"] is False
    assert field_errors(result) == [("orderId", "NOT_FOUND")]
    assert "FORBIDDEN" not in str(result)
    assert row_counts(session) == before
    session.refresh(order)
    assert order.status == "NEW"


def test_another_customers_order_reads_as_null(jane):
    order = OrderFactory()

    assert jane.execute(ORDER, {"id": str(order.id)}) == {"order": None}


def test_an_unknown_order_reads_as_null(jane):
    assert jane.execute(ORDER, {"id": str(uuid.uuid4())}) == {"order": None}


def test_an_unknown_order_cannot_be_confirmed(jane):
    result = jane.execute(CONFIRM, {"id": str(uuid.uuid4())})["confirmOrder"]

    assert field_errors(result) == [("orderId", "NOT_FOUND")]


def test_admin_reads_any_order_with_its_events(admin):
    order = OrderFactory()

    assert admin.execute(ORDER, {"id": str(order.id)})["order"]["status"] == "NEW"


# --- idempotency ----------------------------------------------------------------------------


def count_orders(session) -> int:
    return row_counts(session)["orders"]


def test_same_key_and_payload_replays_the_first_order(jane, session):
    fields = {"unitPrice": "250.00", "quantity": 2, "item": "Sugar", "idempotencyKey": "k-1"}
    first = create(jane, **fields)
    orders_after_first = count_orders(session)

    second = create(jane, **fields)

    assert first["replayed"] is False
    assert second["success"] is True
    assert second["replayed"] is True
    assert second["order"] == first["order"]
    assert count_orders(session) == orders_after_first


def test_replay_adds_no_event(jane):
    fields = {"unitPrice": "10", "idempotencyKey": "k-events"}
    order_id = create(jane, **fields)["order"]["id"]

    create(jane, **fields)

    events = jane.execute(ORDER, {"id": order_id})["order"]["events"]
    assert [event["type"] for event in events] == ["CREATED"]


def test_same_key_with_a_different_payload_is_refused(jane, session):
    create(jane, unitPrice="250.00", idempotencyKey="k-2")
    before = row_counts(session)

    result = create(jane, unitPrice="251.00", idempotencyKey="k-2")

    assert result["success"] is False
    assert result["order"] is None
    assert result["replayed"] is False
    assert field_errors(result) == [("idempotencyKey", "IDEMPOTENCY_KEY_REUSED")]
    assert row_counts(session) == before


def test_keys_are_per_caller(jane, admin, session):
    mine = create(jane, unitPrice="10", idempotencyKey="shared-key")
    theirs = create(admin, unitPrice="10", idempotencyKey="shared-key")

    assert mine["replayed"] is False
    assert theirs["success"] is True
    assert theirs["replayed"] is False
    assert theirs["order"]["id"] != mine["order"]["id"]
    assert theirs["order"]["customerId"] == ADMIN_SUB


def test_without_a_key_every_request_creates_an_order(jane, session):
    before = count_orders(session)

    first = create(jane, unitPrice="10")
    second = create(jane, unitPrice="10")

    assert first["order"]["id"] != second["order"]["id"]
    assert count_orders(session) == before + 2


def test_a_refused_request_does_not_burn_its_key(jane):
    refused = create(jane, unitPrice="-1", idempotencyKey="k-3")
    accepted = create(jane, unitPrice="1", idempotencyKey="k-3")

    assert refused["success"] is False
    assert accepted["success"] is True
    assert accepted["replayed"] is False


def test_a_key_older_than_24_hours_starts_afresh(jane, session):
    first = create(jane, unitPrice="10", idempotencyKey="k-old")["order"]
    session.execute(
        text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = :k"),
        {"k": "k-old"},
    )
    session.commit()

    again = create(jane, unitPrice="12", idempotencyKey="k-old")

    assert again["success"] is True
    assert again["replayed"] is False
    assert again["order"]["id"] != first["id"]
    assert again["order"]["total"]["amount"] == "12.00"


def test_a_key_younger_than_24_hours_still_replays(jane, session):
    first = create(jane, unitPrice="10", idempotencyKey="k-recent")["order"]
    session.execute(
        text("UPDATE idempotency_keys SET created_at = now() - interval '23 hours' WHERE key = :k"),
        {"k": "k-recent"},
    )
    session.commit()

    again = create(jane, unitPrice="10", idempotencyKey="k-recent")

    assert again["replayed"] is True
    assert again["order"]["id"] == first["id"]


def test_a_refused_order_after_a_placed_one_in_the_same_document_keeps_the_first(jane, session):
    jane.execute("{ me { id } }")  # provisioned by an earlier request: nothing else is written
    before = count_orders(session)
    result = jane.execute(
        """
        mutation {
          placed: createOrder(input: {price: "10.00", idempotencyKey: "k-doc"}) { success }
          refused: createOrder(input: {price: "-1"}) { success }
        }
        """
    )

    assert result["placed"]["success"] is True
    assert result["refused"]["success"] is False
    assert count_orders(session) == before + 1


# -- one transaction per request, committed when the request ends ---------------------------


@pytest.fixture
def signed_in(app, idp, committed):
    """`execute(document, variables)` as Jane, one token throughout, real commits. Her first
    request creates her customer; the second finds it and remembers the token."""
    execute = GraphQLClient(app.test_client(), idp.issue_access_token("jane")).execute
    execute("{ me { id } }")
    execute("{ me { id } }")
    return execute


def committed_counts(app) -> dict[str, int]:
    with app.app_context():
        return row_counts(
            db.session, ("orders", "order_events", "notifications", "idempotency_keys")
        )


def committed_notification_of(app, order_id: object) -> str:
    with app.app_context():
        try:
            return str(
                db.session.scalars(
                    select(Notification.id).where(Notification.order_id == uuid.UUID(order_id))
                ).one()
            )
        finally:
            db.session.remove()


def test_an_order_is_committed_with_its_event_and_sms_which_is_published_after(app, signed_in):
    placed = signed_in(CREATE, {"input": {"price": "99.00", "idempotencyKey": "commit-1"}})

    assert placed["createOrder"]["success"] is True
    assert committed_counts(app) == {
        "orders": 1,
        "order_events": 1,
        "notifications": 1,
        "idempotency_keys": 1,
    }
    notification_id = committed_notification_of(app, placed["createOrder"]["order"]["id"])
    queue = app.extensions["outbox_relay"].queue_name
    assert wait_for(lambda: publications_of(notification_id, queue))


def test_the_replay_of_a_committed_order_finds_it(app, signed_in):
    fields = {"price": "99.00", "idempotencyKey": "commit-2"}
    first = signed_in(CREATE, {"input": fields})["createOrder"]
    again = signed_in(CREATE, {"input": fields})["createOrder"]

    assert (again["replayed"], again["order"]["id"]) == (True, first["order"]["id"])
    assert committed_counts(app)["orders"] == 1


def test_refused_orders_write_nothing(app, signed_in):
    signed_in(CREATE, {"input": {"price": "5.00", "idempotencyKey": "commit-3"}})

    invalid = signed_in(CREATE, {"input": {"price": "-1"}})["createOrder"]
    reused = signed_in(CREATE, {"input": {"price": "6.00", "idempotencyKey": "commit-3"}})

    assert invalid["success"] is False
    assert reused["createOrder"]["fieldErrors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert committed_counts(app) == {
        "orders": 1,
        "order_events": 1,
        "notifications": 1,
        "idempotency_keys": 1,
    }


def test_a_refused_order_beside_a_placed_one_commits_the_placed_one(app, signed_in):
    result = signed_in(
        """
        mutation {
          placed: createOrder(input: {price: "10.00"}) { success }
          refused: createOrder(input: {price: "-1"}) { success }
          again: createOrder(input: {price: "11.00"}) { success }
        }
        """
    )

    assert [result[name]["success"] for name in ("placed", "refused", "again")] == [
        True,
        False,
        True,
    ]
    assert committed_counts(app) == {
        "orders": 2,
        "order_events": 2,
        "notifications": 2,
        "idempotency_keys": 0,
    }


def test_an_order_rolled_back_is_neither_kept_nor_published(app, signed_in):
    with app.app_context():
        customer_id = db.session.scalar(text("SELECT id FROM customers"))
        actor = Actor(subject=JANE_SUB, customer_id=customer_id)
        session = db.session()
        placing.create_order(session, actor=actor, price="15.00", company="Acme")
        doomed_notification = str(session.scalar(select(Notification.id)))
        session.rollback()  # say a later field failed: nothing of the request is kept
        kept = placing.create_order(session, actor=actor, price="16.00", company="Acme")
        kept_order = str(kept.order.id)
        session.commit()
        db.session.remove()

    assert committed_counts(app)["orders"] == 1
    kept_notification = committed_notification_of(app, kept_order)
    assert kept_notification != doomed_notification
    queue = app.extensions["outbox_relay"].queue_name
    assert wait_for(lambda: publications_of(kept_notification, queue))
    # The relay publishes in the order it was handed ids: the rolled-back one would be there.
    assert publications_of(doomed_notification, queue) == []


def test_a_response_keeps_the_order_the_query_asked_for(jane):
    response = jane.post(
        "mutation { createOrder(input: {price: 10}) { success order { totalPrice status id } "
        "message } }"
    )

    answer = json.loads(response.get_data(as_text=True))["data"]["createOrder"]
    assert list(answer) == ["success", "order", "message"]
    assert list(answer["order"]) == ["totalPrice", "status", "id"]
