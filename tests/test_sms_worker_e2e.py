# ruff: noqa: F811 - pytest fixtures imported from tests.sms_support are used by name
"""End to end with a real Celery worker subprocess on Redis, the fake gateway over real HTTP
and real commits: orders send SMS, transient failures are retried, permanent ones are not,
delivery reports come back over HTTP, Redis outages and dead workers lose nothing."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import redis
from sqlalchemy import select, text

from models.db import db
from models.notifications import (
    AttemptOutcome,
    Notification,
    NotificationAttempt,
    NotificationKind,
    NotificationStatus,
)
from tests.factories import OutboxMessage, enqueue
from tests.sms_support import (  # noqa: F401 - fixtures, used by name
    CALLBACK_SECRET,
    DELIVERY_PATH,
    JANE_PHONE,
    OUTBOX_KEY,
    REDIS_URL,
    ROOT,
    OrderFactory,
    WorkerProcess,
    bound,
    celery_worker,
    committed_sms,
    dispose,
    forget_unacked,
    gateway,
    gateway_server,
    procfile_pool,
    sms_app,
    sms_http,
    sms_settings,
    wait_for,
    worker_env,
)
from web import create_app
from worker.tasks import send_notification, sweep

CREATE = """
mutation($input: CreateOrderInput!) { createOrder(input: $input) { success order { id } } }
"""
CONFIRM = """
mutation($id: ID!) { confirmOrder(orderId: $id) { success fieldErrors { code } } }
"""

pytestmark = pytest.mark.usefixtures("celery_worker", "committed_sms")


@pytest.fixture
def call(sms_app, idp):
    """`call(document, variables)` as jane on a fresh client: its own request, session,
    connection and real commit; fails on GraphQL errors."""

    def post(document: str, variables: dict[str, Any], application=None) -> dict[str, Any]:
        token = idp.issue_access_token("jane")
        response = (
            (application or sms_app)
            .test_client()
            .post(
                "/graphql",
                json={"query": document, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        body = response.get_json()
        assert "errors" not in body, body
        return body["data"]

    return post


def place(call, application=None) -> str:
    result = call(CREATE, {"input": {"price": "1200"}}, application)["createOrder"]
    assert result["success"], result
    return result["order"]["id"]


def read(application, statement) -> list[Any]:
    with application.app_context():
        try:
            rows = list(db.session.scalars(statement))
            db.session.expunge_all()
            return rows
        finally:
            db.session.remove()


def notifications(application, order_id: str) -> list[Notification]:
    return read(
        application,
        select(Notification)
        .where(Notification.order_id == uuid.UUID(order_id))
        .order_by(Notification.created_at),
    )


def attempts(application, notification_id) -> list[NotificationAttempt]:
    return read(
        application,
        select(NotificationAttempt)
        .where(NotificationAttempt.notification_id == notification_id)
        .order_by(NotificationAttempt.id),
    )


def wait_until(application, order_id: str, kind: str, *statuses: str) -> Notification:
    """Poll (bounded) until the order's `kind` notification is in one of `statuses`."""

    def reached():
        """the notification to reach the expected status"""
        for row in notifications(application, order_id):
            if row.kind == kind and row.status in statuses:
                return row
        return None

    return wait_for(reached)


def execute(application, sql: str, **params: Any) -> None:
    with application.app_context():
        try:
            db.session.execute(text(sql), params)
            db.session.commit()
        finally:
            db.session.remove()


# -- orders send SMS ------------------------------------------------------------------------


def test_a_placed_order_is_sent_by_the_worker(sms_app, call, gateway):
    order_id = place(call)

    row = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENT)

    (message,) = gateway.messages
    assert message["to"] == JANE_PHONE
    assert message["message"] == row.body
    assert row.provider_message_id == message["message_id"]
    assert row.cost == "KES 0.8000"
    assert row.attempts == 1
    assert [(a.outcome, a.gateway_status_code) for a in attempts(sms_app, row.id)] == [
        (AttemptOutcome.ACCEPTED, 101)
    ]


def test_a_tasks_lines_carry_the_id_of_the_request_that_queued_it_and_the_next_tasks_none(
    sms_settings, idp, gateway, gateway_server, database_url
):
    queue = f"{sms_settings.celery_queue}-ids"
    application = create_app(replace(sms_settings, celery_queue=queue))
    # One task at a time on one thread: the next task runs on the thread the first ran on.
    worker = WorkerProcess(worker_env(database_url, gateway_server.url, queue), concurrency=1)
    gateway.script(JANE_PHONE, 403)  # refused for good: the worker logs why
    try:
        worker.start()
        response = application.test_client().post(
            "/graphql",
            json={"query": CREATE, "variables": {"input": {"price": "75.00"}}},
            headers={
                "Authorization": f"Bearer {idp.issue_access_token('jane')}",
                "X-Request-ID": "trace-order-42",
            },
        )
        order_id = response.get_json()["data"]["createOrder"]["order"]["id"]
        failed = wait_until(application, order_id, "ORDER_PLACED", NotificationStatus.FAILED)
        # The next task, of no request: its id is no notification's.
        application.extensions["celery"].send_task(
            "notifications.send", args=("no-such-notification",), queue=queue
        )
        wait_for(lambda: "no-such-notification" in worker.output())
    finally:
        worker.stop()
        forget_unacked(queue)
        dispose(application)

    lines = [json.loads(line) for line in worker.lines if line.startswith("{")]
    (refused,) = [line for line in lines if line["message"].startswith(f"SMS {failed.id} failed")]
    (skipped,) = [line for line in lines if "no-such-notification" in line["message"]]
    assert response.headers["X-Request-ID"] == "trace-order-42"
    assert refused["request_id"] == "trace-order-42"
    assert "request_id" not in skipped


def test_confirming_sends_a_second_sms(sms_app, call, gateway):
    order_id = place(call)
    placed = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENT)

    assert call(CONFIRM, {"id": order_id})["confirmOrder"]["success"]
    confirmed = wait_until(sms_app, order_id, "ORDER_CONFIRMED", NotificationStatus.SENT)

    assert [m["message"] for m in gateway.messages] == [placed.body, confirmed.body]
    assert "is confirmed" in confirmed.body


def test_two_transient_failures_then_success_give_one_sms_and_three_attempts(
    sms_app, call, gateway
):
    gateway.script(JANE_PHONE, 500, "http:503")
    order_id = place(call)

    row = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENT)

    assert row.attempts == 3
    assert gateway.requests == 3
    assert [m["status_code"] for m in gateway.messages] == [500, 101]
    tries = attempts(sms_app, row.id)
    assert [(a.outcome, a.gateway_status_code, a.http_status) for a in tries] == [
        (AttemptOutcome.RETRY, 500, 201),
        (AttemptOutcome.RETRY, None, 503),
        (AttemptOutcome.ACCEPTED, 101, 201),
    ]
    assert row.last_error is None  # the last try went through


def test_a_permanent_refusal_gives_one_gateway_call_and_failed(sms_app, call, gateway):
    gateway.script(JANE_PHONE, 403)
    order_id = place(call)

    row = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.FAILED)

    assert row.attempts == 1
    assert row.last_error == "gateway status 403 InvalidPhoneNumber"
    assert [(a.outcome, a.error) for a in attempts(sms_app, row.id)] == [
        (AttemptOutcome.PERMANENT, row.last_error)
    ]
    assert gateway.requests == 1


def test_twenty_concurrent_confirms_send_one_confirmation_sms(sms_app, call, gateway):
    order_id = place(call)
    wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENT)
    start = threading.Event()

    def confirm(_: int) -> bool:
        start.wait()
        return call(CONFIRM, {"id": order_id})["confirmOrder"]["success"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(confirm, n) for n in range(20)]
        start.set()
        outcomes = [future.result() for future in futures]

    wait_until(sms_app, order_id, "ORDER_CONFIRMED", NotificationStatus.SENT)
    assert outcomes.count(True) == 1
    assert [n.kind for n in notifications(sms_app, order_id)] == [
        "ORDER_PLACED",
        "ORDER_CONFIRMED",
    ]
    assert len(gateway.messages) == 2


# -- delivery reports over HTTP -------------------------------------------------------------


def test_a_delivery_report_from_the_gateway_marks_the_sms_delivered(
    sms_app, sms_http, call, gateway
):
    order_id = place(call)
    sent = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENT)
    url = f"{sms_http}{DELIVERY_PATH}"

    assert gateway.deliver(sent.provider_message_id, "Success", url=url, key="wrong") == 403
    assert notifications(sms_app, order_id)[0].status == NotificationStatus.SENT
    assert gateway.deliver(sent.provider_message_id, "Buffered", url=url, key=CALLBACK_SECRET)
    assert notifications(sms_app, order_id)[0].status == NotificationStatus.SENT
    status = gateway.deliver(sent.provider_message_id, "Success", url=url, key=CALLBACK_SECRET)

    assert status == 200
    delivered = notifications(sms_app, order_id)[0]
    assert delivered.status == NotificationStatus.DELIVERED
    assert delivered.delivered_at is not None


def test_repeated_and_out_of_order_reports_change_nothing_after_delivery(
    sms_app, sms_http, call, gateway
):
    order_id = place(call)
    sent = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENT)
    url = f"{sms_http}{DELIVERY_PATH}"
    gateway.deliver(sent.provider_message_id, "Success", url=url, key=CALLBACK_SECRET)
    delivered = notifications(sms_app, order_id)[0]

    answers = [
        gateway.deliver(sent.provider_message_id, status, url=url, key=CALLBACK_SECRET)
        for status in ("Success", "Failed", "Submitted", "Expired")
    ]

    assert answers == [200] * 4
    row = notifications(sms_app, order_id)[0]
    assert (row.status, row.delivered_at, row.last_error) == (
        NotificationStatus.DELIVERED,
        delivered.delivered_at,
        None,
    )


def test_a_failed_delivery_report_marks_the_sms_failed_with_the_reason(
    sms_app, sms_http, call, gateway
):
    order_id = place(call)
    sent = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENT)

    status = gateway.deliver(
        sent.provider_message_id,
        "AbsentSubscriber",
        url=f"{sms_http}{DELIVERY_PATH}",
        key=CALLBACK_SECRET,
    )

    assert status == 200
    row = notifications(sms_app, order_id)[0]
    assert row.status == NotificationStatus.FAILED
    assert "AbsentSubscriber" in row.last_error


# -- Redis down, workers dying --------------------------------------------------------------


@pytest.fixture
def no_redis_app(settings):
    application = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0"))
    yield application
    dispose(application)


def test_orders_placed_while_redis_was_down_are_sent_by_the_sweep(
    sms_app, no_redis_app, call, gateway, settings
):
    order_ids = [place(call, no_redis_app) for _ in range(5)]
    for order_id in order_ids:
        assert notifications(sms_app, order_id)[0].status == NotificationStatus.QUEUED
    # Data setup standing in for the time that passed: the rows are overdue for the sweep.
    execute(sms_app, "UPDATE notifications SET next_attempt_at = now() - interval '2 minutes'")

    with bound(sms_app):
        sweep.apply_async(queue=settings.celery_queue)  # what beat does every 30 s

    rows = [wait_until(sms_app, o, "ORDER_PLACED", NotificationStatus.SENT) for o in order_ids]
    assert sorted(m["message_id"] for m in gateway.messages) == sorted(
        r.provider_message_id for r in rows
    )
    assert {r.attempts for r in rows} == {1}
    assert [[a.outcome for a in attempts(sms_app, r.id)] for r in rows] == [
        [AttemptOutcome.ACCEPTED]
    ] * len(rows)


def test_an_sms_whose_worker_was_killed_mid_send_is_sent_again_after_the_lease(
    sms_app, call, gateway, celery_worker, settings
):
    gateway.script(JANE_PHONE, "timeout")  # the gateway holds the first request
    order_id = place(call)
    sending = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENDING)
    wait_for(lambda: gateway.stats()["in_flight"] >= 1)

    celery_worker.kill()
    celery_worker.start()

    assert gateway.requests == 1
    assert notifications(sms_app, order_id)[0].status == NotificationStatus.SENDING
    # Data setup standing in for the 60 s lease running out.
    execute(
        sms_app,
        "UPDATE notifications SET lease_expires_at = now() - interval '1 second' WHERE id = :id",
        id=str(sending.id),
    )
    with bound(sms_app):
        sweep.apply_async(queue=settings.celery_queue)

    row = wait_until(sms_app, order_id, "ORDER_PLACED", NotificationStatus.SENT)
    assert row.attempts == 2
    assert row.last_error is None
    # The cut-off try says it may have gone out; the last one went through.
    assert [a.outcome for a in attempts(sms_app, row.id)] == [
        AttemptOutcome.INTERRUPTED,
        AttemptOutcome.ACCEPTED,
    ]
    assert gateway.requests == 2  # at least once: the lost try may have reached the gateway
    assert [m["status_code"] for m in gateway.messages] == [101]
    wait_for(lambda: "stopped mid-send" in celery_worker.output())


# -- task time limits -----------------------------------------------------------------------


@pytest.fixture
def impatient_worker(database_url, gateway_server, settings):
    """A worker in the Procfile's pool, on a queue of its own, that waits 1 s for the gateway."""
    env = worker_env(database_url, gateway_server.url, f"{settings.celery_queue}-impatient")
    env["SMS_TIMEOUT"] = "1"
    process = WorkerProcess(env)
    process.start()
    yield process
    process.stop()
    forget_unacked(process.queue)
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(process.queue)
    client.close()


def queued_row(application) -> uuid.UUID:
    """A committed QUEUED notification whose id is published to no queue."""
    with application.app_context():
        try:
            order = OrderFactory(customer__phone=JANE_PHONE)
            notification = enqueue(
                db.session,
                OutboxMessage(
                    order_id=order.id,
                    kind=NotificationKind.ORDER_PLACED,
                    phone=JANE_PHONE,
                    total=order.total,
                    currency=order.currency,
                ),
                company="Acme",
            )
            db.session.flush()
            db.session.info.pop(OUTBOX_KEY, None)
            db.session.commit()
            return notification.id
        finally:
            db.session.remove()


def test_a_send_that_outlives_sms_timeout_is_abandoned_long_before_its_lease(
    sms_app, gateway, impatient_worker
):
    """The thread pool does not enforce Celery's time limits, so the sender's own timeouts
    (connect 3 s, then SMS_TIMEOUT) are what keep a send far shorter than its 60 s lease."""
    notification_id = queued_row(sms_app)
    gateway.latency = 30  # half the lease: it answers long after SMS_TIMEOUT (1 s)

    with bound(sms_app):
        send_notification.apply_async((str(notification_id),), queue=impatient_worker.queue)

    def settled():
        """the worker to settle the send"""
        row = read(sms_app, select(Notification).where(Notification.id == notification_id))[0]
        return row if row.status != NotificationStatus.SENDING and row.attempts == 1 else None

    row = wait_for(settled, timeout=60)
    assert row.status == NotificationStatus.QUEUED
    assert row.last_error == "the gateway did not answer in time; it may have the message"
    (attempt,) = attempts(sms_app, notification_id)
    assert attempt.outcome == AttemptOutcome.UNANSWERED
    # The worker hung up first: the gateway's answer went into a closed connection.
    (message,) = wait_for(lambda: [m for m in gateway.messages if m["reply"] != "pending"])
    assert message["reply"] == "cut"
