# ruff: noqa: F811 - pytest fixtures imported from tests.sms_support are used by name
"""The outbox as the API writes it (one notification per order change, in the same
transaction, Redis optional; published after commit: tests/test_outbox.py) and notifications
in GraphQL: Order.notifications, the admins' list and resendNotification."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from models.db import db
from models.messages import short_reference
from models.notifications import Notification, NotificationKind, NotificationStatus
from tests.factories import OutboxMessage, enqueue
from tests.sms_support import (  # noqa: F401 - fixtures, used by name
    CALLBACK_SECRET,
    DELIVERY_PATH,
    JANE_PHONE,
    committed_sms,
    dispose,
    fresh,
    gateway,
    gateway_server,
    make_notification,
    publications_of,
    run_send,
    set_row,
    sms_app,
    sms_settings,
    tasks_app,
    wait_for,
)
from web import create_app

BOB_SUB = "5b0b0b0b-1111-4222-8333-444455556666"
CREATE = """
mutation($input: CreateOrderInput!) {
  createOrder(input: $input) { success errors order { id status } }
}
"""
CONFIRM = """
mutation($id: ID!) {
  confirmOrder(orderId: $id) { success errors fieldErrors { code } order { status } }
}
"""
CANCEL = """
mutation($id: ID!) {
  cancelOrder(orderId: $id) { success errors fieldErrors { code } order { status } }
}
"""
ORDER_NOTIFICATIONS = """
query($id: ID!) {
  order(id: $id) {
    notifications {
      id kind status attempts lastError providerMessageId cost createdAt sentAt deliveredAt
      phone body orderId history { outcome error providerMessageId }
    }
  }
}
"""
LIST = """
query($status: NotificationStatus, $first: Int, $after: String) {
  notifications(status: $status, first: $first, after: $after) {
    nodes { id status kind }
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
RESEND = """
mutation($id: ID!) {
  resendNotification(id: $id) {
    success message errors fieldErrors { field code }
    notification { id status attempts providerMessageId }
  }
}
"""


@pytest.fixture
def bob(graphql):
    """A second ordinary customer."""
    return graphql(
        "jane", sub=BOB_SUB, name="Bob Otieno", phone_number="+254733000222", email="b@x.io"
    )


def place(client, price: str = "1200", **extra) -> str:
    result = client.execute(CREATE, {"input": {"price": price, **extra}})["createOrder"]
    assert result["success"], result
    return result["order"]["id"]


def notifications_of(session, order_id: str) -> list[Notification]:
    session.expire_all()
    return list(
        session.scalars(
            select(Notification)
            .where(Notification.order_id == uuid.UUID(order_id))
            .order_by(Notification.created_at)
        )
    )


def kinds_of(session, order_id: str) -> list[str]:
    return [n.kind for n in notifications_of(session, order_id)]


# -- the outbox rows ------------------------------------------------------------------------


def test_placing_an_order_queues_one_order_placed_sms_to_the_customer(session, jane, app):
    order_id = place(jane, "1200")

    (notification,) = notifications_of(session, order_id)
    assert notification.kind == NotificationKind.ORDER_PLACED
    assert notification.status == NotificationStatus.QUEUED
    assert notification.attempts == 0
    assert notification.phone == JANE_PHONE
    company = app.config["SETTINGS"].company_name
    reference = short_reference(uuid.UUID(order_id))
    assert notification.body.startswith(f"{company}: order {reference} for KES 1,200.00")
    assert len(notification.body) <= 160


def test_confirming_queues_one_order_confirmed_sms(session, jane):
    order_id = place(jane)

    assert jane.execute(CONFIRM, {"id": order_id})["confirmOrder"]["success"]

    assert kinds_of(session, order_id) == ["ORDER_PLACED", "ORDER_CONFIRMED"]
    confirmed = notifications_of(session, order_id)[1]
    assert "is confirmed" in confirmed.body


def test_cancelling_queues_one_order_cancelled_sms(session, jane):
    order_id = place(jane)

    assert jane.execute(CANCEL, {"id": order_id})["cancelOrder"]["success"]

    assert kinds_of(session, order_id) == ["ORDER_PLACED", "ORDER_CANCELLED"]


def test_an_admin_cancelling_a_confirmed_order_queues_a_third_sms(session, jane, admin):
    order_id = place(jane)
    jane.execute(CONFIRM, {"id": order_id})

    assert admin.execute(CANCEL, {"id": order_id})["cancelOrder"]["success"]

    assert kinds_of(session, order_id) == ["ORDER_PLACED", "ORDER_CONFIRMED", "ORDER_CANCELLED"]


def test_a_refused_confirm_queues_nothing(session, jane):
    order_id = place(jane)
    jane.execute(CONFIRM, {"id": order_id})

    again = jane.execute(CONFIRM, {"id": order_id})["confirmOrder"]

    assert again["success"] is False
    assert again["fieldErrors"] == [{"code": "INVALID_STATE"}]
    assert kinds_of(session, order_id) == ["ORDER_PLACED", "ORDER_CONFIRMED"]


def test_confirming_a_cancelled_order_queues_nothing(session, jane):
    order_id = place(jane)
    jane.execute(CANCEL, {"id": order_id})

    assert jane.execute(CONFIRM, {"id": order_id})["confirmOrder"]["success"] is False

    assert kinds_of(session, order_id) == ["ORDER_PLACED", "ORDER_CANCELLED"]


def test_a_refused_order_queues_nothing(session, jane):
    before = session.scalar(select(func.count()).select_from(Notification))

    result = jane.execute(CREATE, {"input": {"price": "-5"}})["createOrder"]

    assert result["success"] is False
    assert session.scalar(select(func.count()).select_from(Notification)) == before


def test_a_replayed_order_queues_no_second_sms(session, jane):
    first = place(jane, idempotencyKey="sms-once")

    second = place(jane, idempotencyKey="sms-once")

    assert first == second
    assert kinds_of(session, first) == ["ORDER_PLACED"]


def post_committed(app, idp, document: str, variables: dict) -> dict:
    """A request on its own connection, really committed."""
    response = app.test_client().post(
        "/graphql",
        json={"query": document, "variables": variables},
        headers={"Authorization": f"Bearer {idp.issue_access_token('jane')}"},
    )
    body = response.get_json()
    assert "errors" not in body, body
    return body["data"]


def xmins(app, order_id: str) -> dict[str, set[str]]:
    """The transaction ids that wrote the order's current row, its events and its SMS rows."""
    with app.app_context():
        try:
            rows = db.session.execute(
                text(
                    "SELECT 'order', xmin::text FROM orders WHERE id = :id "
                    "UNION ALL SELECT 'event ' || type, xmin::text FROM order_events "
                    "WHERE order_id = :id "
                    "UNION ALL SELECT 'sms ' || kind, xmin::text FROM notifications "
                    "WHERE order_id = :id"
                ),
                {"id": order_id},
            ).all()
        finally:
            db.session.remove()
    return {name: xmin for name, xmin in rows}


def test_the_sms_row_is_written_in_the_transaction_of_the_order_change(app, idp, committed_sms):
    order_id = post_committed(app, idp, CREATE, {"input": {"price": "10"}})["createOrder"]["order"][
        "id"
    ]
    placed = xmins(app, order_id)

    post_committed(app, idp, CONFIRM, {"id": order_id})
    confirmed = xmins(app, order_id)

    assert placed["sms ORDER_PLACED"] == placed["order"] == placed["event CREATED"]
    assert confirmed["sms ORDER_CONFIRMED"] == confirmed["order"] == confirmed["event CONFIRMED"]
    assert confirmed["sms ORDER_CONFIRMED"] != placed["sms ORDER_PLACED"]


def test_one_notification_per_order_and_kind(session):
    notification = make_notification(session)
    message = OutboxMessage(
        order_id=notification.order_id,
        kind=NotificationKind.ORDER_PLACED,
        phone=notification.phone,
        total=Decimal("1200.00"),
        currency="KES",
    )

    savepoint = session.begin_nested()
    enqueue(session, message, company="Acme")
    with pytest.raises(IntegrityError):
        session.flush()
    savepoint.rollback()


# -- Redis unreachable ----------------------------------------------------------------------


@pytest.fixture
def no_redis_app(settings):
    application = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0"))
    yield application
    dispose(application)


def _dropped_while_the_broker_is_down() -> float:
    return REGISTRY.get_sample_value("sms_relay_dropped_total", {"reason": "broker_down"}) or 0.0


def test_with_redis_unreachable_orders_are_placed_and_wait_queued_for_the_sweep(
    no_redis_app, idp, committed_sms
):
    client = no_redis_app.test_client()
    headers = {"Authorization": f"Bearer {idp.issue_access_token('jane')}"}
    dropped = _dropped_while_the_broker_is_down()
    order_ids = []

    for _ in range(5):
        response = client.post(
            "/graphql",
            json={"query": CREATE, "variables": {"input": {"price": "10"}}},
            headers=headers,
        )
        assert response.status_code == 200
        result = response.get_json()["data"]["createOrder"]
        assert result["success"], result
        order_ids.append(result["order"]["id"])

    with no_redis_app.app_context():
        rows = db.session.scalars(
            select(Notification).where(Notification.order_id.in_([uuid.UUID(i) for i in order_ids]))
        ).all()
        db.session.remove()
    assert len(rows) == 5
    assert {row.status for row in rows} == {NotificationStatus.QUEUED}
    # The relay tried each and left it to the sweep, counted (redis-py tries for about 8 s).
    wait_for(lambda: _dropped_while_the_broker_is_down() >= dropped + 5, timeout=60)
    assert _dropped_while_the_broker_is_down() == dropped + 5


# -- Order.notifications --------------------------------------------------------------------


def test_the_owner_sees_the_notifications_of_an_order_oldest_first(session, jane):
    order_id = place(jane)
    jane.execute(CONFIRM, {"id": order_id})

    placed, confirmed = jane.execute(ORDER_NOTIFICATIONS, {"id": order_id})["order"][
        "notifications"
    ]

    assert (placed["kind"], confirmed["kind"]) == ("ORDER_PLACED", "ORDER_CONFIRMED")
    assert placed["createdAt"] <= confirmed["createdAt"]
    assert placed["orderId"] == order_id
    assert placed["status"] == "QUEUED"
    assert placed["attempts"] == 0
    for field in ("lastError", "providerMessageId", "cost", "sentAt", "deliveredAt"):
        assert placed[field] is None, field
    assert placed["body"].startswith("Donfiles: order ")


def test_delivery_details_show_in_the_order_notifications(
    session, jane, gateway, tasks_app, sms_app
):
    order_id = place(jane)
    (notification,) = notifications_of(session, order_id)
    gateway.script(JANE_PHONE, 500)  # the first try fails, the second goes through
    assert run_send(session, notification.id) == "retry"
    set_row(session, notification.id, "next_attempt_at = clock_timestamp()")  # time passes
    assert run_send(session, notification.id) == "accepted"
    message_id = fresh(session, notification.id).provider_message_id
    reported = sms_app.test_client().post(
        f"{DELIVERY_PATH}?key={CALLBACK_SECRET}",
        data={"id": message_id, "status": "Success", "phoneNumber": JANE_PHONE},
    )
    assert reported.status_code == 200

    (shown,) = jane.execute(ORDER_NOTIFICATIONS, {"id": order_id})["order"]["notifications"]

    assert shown["id"] == str(notification.id)
    assert shown["status"] == "DELIVERED"
    assert shown["attempts"] == 2
    assert [a["outcome"] for a in shown["history"]] == ["RETRY", "ACCEPTED"]
    assert shown["history"][0]["error"] == "gateway status 500 InternalServerError"
    assert shown["lastError"] is None  # the last try went through
    assert shown["providerMessageId"] == message_id == shown["history"][-1]["providerMessageId"]
    assert shown["cost"] == "KES 0.8000"
    assert shown["sentAt"] is not None
    assert shown["deliveredAt"] >= shown["sentAt"]


def test_the_phone_is_masked_in_the_api(session, jane):
    order_id = place(jane)

    (shown,) = jane.execute(ORDER_NOTIFICATIONS, {"id": order_id})["order"]["notifications"]

    assert shown["phone"] == "+254******678"
    assert "712345" not in shown["phone"]


def test_another_customer_sees_neither_the_order_nor_its_notifications(session, jane, bob):
    order_id = place(jane)

    assert bob.execute(ORDER_NOTIFICATIONS, {"id": order_id}) == {"order": None}


def test_an_admin_sees_a_customers_order_notifications(session, jane, admin):
    order_id = place(jane)

    shown = admin.execute(ORDER_NOTIFICATIONS, {"id": order_id})["order"]["notifications"]

    assert [n["kind"] for n in shown] == ["ORDER_PLACED"]


# -- the admins' notification list ----------------------------------------------------------


def failed_notifications(session, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        notification = make_notification(session)
        set_row(session, notification.id, "status = 'FAILED', last_error = 'x'")
        ids.append(str(notification.id))
    return ids


def test_admins_list_notifications_of_one_status_in_pages_newest_first(session, admin):
    failed = failed_notifications(session, 3)
    queued = str(make_notification(session).id)

    first = admin.execute(LIST, {"status": "FAILED", "first": 2})["notifications"]
    second = admin.execute(
        LIST, {"status": "FAILED", "first": 2, "after": first["pageInfo"]["endCursor"]}
    )["notifications"]

    assert [n["id"] for n in first["nodes"]] == failed[::-1][:2]
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["endCursor"] == first["edges"][-1]["cursor"]
    assert [n["id"] for n in second["nodes"]] == failed[::-1][2:]
    assert second["pageInfo"]["hasNextPage"] is False
    shown = {n["id"] for page in (first, second) for n in page["nodes"]}
    assert queued not in shown
    assert {n["status"] for page in (first, second) for n in page["nodes"]} == {"FAILED"}


def test_admins_list_every_status_without_a_filter(session, admin):
    failed = failed_notifications(session, 1)
    queued = str(make_notification(session).id)

    nodes = admin.execute(LIST, {"first": 50})["notifications"]["nodes"]

    assert {failed[0], queued} <= {n["id"] for n in nodes}


def test_a_customer_may_not_list_notifications(session, jane):
    failed_notifications(session, 1)

    response = jane.post(LIST, {"status": "FAILED", "first": 2})

    body = response.get_json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN"}


def test_listing_notifications_needs_a_token(session, graphql):
    body = graphql(None).post(LIST, {"first": 2}).get_json()

    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# -- resendNotification ---------------------------------------------------------------------


def test_resending_a_failed_notification_queues_it_with_a_fresh_budget_and_publishes_it(
    session, admin, settings
):
    notification = make_notification(session)
    set_row(
        session,
        notification.id,
        "status = 'FAILED', attempts = 6, last_error = 'gateway status 500', "
        "next_attempt_at = clock_timestamp() + interval '1 hour'",
    )

    result = admin.execute(RESEND, {"id": str(notification.id)})["resendNotification"]

    assert result["success"] is True
    assert result["errors"] == []
    assert result["notification"]["status"] == "QUEUED"
    assert result["notification"]["attempts"] == 0
    row = fresh(session, notification.id)
    assert (row.status, row.attempts) == (NotificationStatus.QUEUED, 0)
    assert row.next_attempt_at <= row.updated_at
    wait_for(lambda: publications_of(notification.id, settings.celery_queue), timeout=5)


def test_a_resent_notification_is_sent_by_the_next_task(session, admin, gateway, tasks_app):
    notification = make_notification(session)
    set_row(session, notification.id, "status = 'FAILED', attempts = 4, last_error = 'x'")
    admin.execute(RESEND, {"id": str(notification.id)})

    assert run_send(session, notification.id) == "accepted"

    row = fresh(session, notification.id)
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 1)
    assert len(gateway.messages) == 1


@pytest.mark.parametrize("status", ["QUEUED", "SENDING", "SENT", "DELIVERED"])
def test_only_a_failed_notification_can_be_resent(session, admin, settings, status):
    notification = make_notification(session)
    set_row(session, notification.id, "status = :status", status=status)

    result = admin.execute(RESEND, {"id": str(notification.id)})["resendNotification"]

    assert result["success"] is False
    assert result["notification"] is None
    assert result["fieldErrors"] == [{"field": "id", "code": "INVALID_STATE"}]
    assert fresh(session, notification.id).status == status


@pytest.mark.parametrize(
    ("given", "code"), [(str(uuid.uuid4()), "NOT_FOUND"), ("not-an-id", "INVALID")]
)
def test_resending_an_unknown_or_malformed_id_is_refused(session, admin, given, code):
    result = admin.execute(RESEND, {"id": given})["resendNotification"]

    assert result["success"] is False
    assert result["fieldErrors"] == [{"field": "id", "code": code}]


def test_a_customer_may_not_resend(session, jane):
    order_id = place(jane)
    (notification,) = notifications_of(session, order_id)
    set_row(session, notification.id, "status = 'FAILED'")

    result = jane.execute(RESEND, {"id": str(notification.id)})["resendNotification"]

    assert result["success"] is False
    assert result["fieldErrors"][0]["code"] == "FORBIDDEN"
    assert fresh(session, notification.id).status == NotificationStatus.FAILED


# -- the domain functions behind the API ----------------------------------------------------


def test_the_notifications_of_someone_elses_order_are_an_empty_list(session):
    from models.actors import Actor
    from models.batched_reads import notifications_by_order
    from models.orders import Order

    notification = make_notification(session)
    order = session.get_one(Order, notification.order_id)
    stranger = Actor(subject="stranger", customer_id=uuid.uuid4())

    assert notifications_by_order(session, actor=stranger, orders=[order]) == {}


def test_listing_notifications_of_an_unknown_status_is_invalid(session):
    from models.actors import Actor
    from models.errors import DomainError
    from models.notifications import list_notifications

    with pytest.raises(DomainError) as refused:
        list_notifications(session, actor=Actor(subject="a", is_admin=True), status="LOST")

    assert refused.value.errors[0].field == "status"
    assert refused.value.errors[0].code.value == "INVALID"


def test_listing_notifications_takes_the_status_in_any_letter_case(session):
    from models.actors import Actor
    from models.notifications import list_notifications

    failed = failed_notifications(session, 1)

    page = list_notifications(
        session, actor=Actor(subject="a", is_admin=True), status=" failed ", first=50
    )

    assert failed[0] in {str(n.id) for n in page.items}
    assert {n.status for n in page.items} == {"FAILED"}
