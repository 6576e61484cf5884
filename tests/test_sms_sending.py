# ruff: noqa: F811 - pytest fixtures imported from tests.sms_support are used by name
"""The send task, called in-process against the fake gateway over real HTTP: what each gateway
answer does to the notification, its attempts and the logs; backoff; the sweep; the message
texts; the senders; and the Celery settings the at-least-once design relies on."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from celery import Celery
from prometheus_client import REGISTRY
from sqlalchemy import text

import celeryconfig
from common.settings import ConfigError, Settings
from models import outbox
from models.actors import Actor
from models.messages import SMS_LIMIT, message_body, short_reference
from models.notifications import (
    AttemptOutcome,
    NotificationKind,
    NotificationStatus,
    list_notifications,
)
from models.sending import RAW_REPLY_LIMIT
from tests.silent import SilentServer, returns
from tests.sms_support import (  # noqa: F401 - fixtures, used by name
    API_KEY,
    BACKOFF_BASE,
    BACKOFF_CAP,
    COMPANY,
    GATEWAY_HANG,
    MAX_ATTEMPTS,
    ROOT,
    attempts_of,
    bound,
    claim_row,
    dispose,
    fresh,
    gateway,
    gateway_server,
    make_notification,
    publications_of,
    run_send,
    set_row,
    settle_reply,
    sms_app,
    sms_settings,
    task_queue,
    tasks_app,
    wait_for,
)
from web import create_app
from worker.senders import (
    AfricasTalkingSender,
    ConsoleSender,
    Outcome,
    SendResult,
    build_sender,
)
from worker.tasks import backoff, send_batch, send_notification, sweep

PHONE = "+254711000001"
pytestmark = pytest.mark.usefixtures("tasks_app")


def delay_of(row) -> float:
    """Seconds from the retry decision to the next attempt (both stamped by one UPDATE)."""
    return (row.next_attempt_at - row.updated_at).total_seconds()


def ceiling(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    return min(cap, base * 2 ** (attempt - 1))


def due_now(session, notification_id) -> None:
    """Data setup standing in for the passing of the backoff delay."""
    set_row(session, notification_id, "next_attempt_at = clock_timestamp()")


def outcomes_of(session, notification_id) -> list[AttemptOutcome | None]:
    """What became of each attempt, oldest first (None: still under way)."""
    return [attempt.outcome for attempt in attempts_of(session, notification_id)]


def task_records(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "worker.tasks" and r.levelno == level]


# -- accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [100, 101, 102])
def test_accepted_status_codes_mark_the_notification_sent(session, gateway, code):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, code)

    assert run_send(session, notification.id) == "accepted"

    (message,) = gateway.messages
    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.SENT
    assert row.provider_message_id == message["message_id"]
    assert row.provider_message_id.startswith("ATXid_")
    assert row.cost == "KES 0.8000"
    assert row.attempts == 1
    assert row.sent_at is not None
    assert row.lease_expires_at is None
    assert row.last_error is None
    assert outcomes_of(session, notification.id) == [AttemptOutcome.ACCEPTED]


def test_a_sent_notification_has_one_attempt_row_with_the_gateway_reply(session, gateway):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, 102)

    run_send(session, notification.id)

    (attempt,) = attempts_of(session, notification.id)
    row = fresh(session, notification.id)
    assert attempt.outcome == AttemptOutcome.ACCEPTED
    assert attempt.http_status == 201
    assert attempt.gateway_status_code == 102
    assert attempt.gateway_status == "Queued"
    assert attempt.provider_message_id == row.provider_message_id
    assert attempt.error is None
    assert attempt.duration_ms >= 0
    assert attempt.started_at <= row.sent_at
    assert '"SMSMessageData"' in attempt.raw_reply


def test_the_gateway_receives_the_body_for_the_e164_number(session, gateway):
    notification = make_notification(session, phone=PHONE)

    run_send(session, notification.id)

    (message,) = gateway.messages
    assert message["to"] == PHONE
    assert message["message"] == notification.body
    assert message["sender_id"] is None


def test_a_local_number_is_sent_in_e164_form(session, gateway):
    notification = make_notification(session, phone="0711000002")

    assert run_send(session, notification.id) == "accepted"

    assert [m["to"] for m in gateway.messages] == ["+254711000002"]


# -- transient failures: back to QUEUED with backoff ----------------------------------------


RETRY, UNANSWERED = AttemptOutcome.RETRY, AttemptOutcome.UNANSWERED


@pytest.mark.parametrize(
    ("outcome", "error", "recorded"),
    [
        (500, "gateway status 500 InternalServerError", RETRY),
        (501, "gateway status 501 GatewayError", RETRY),
        (502, "gateway status 502 RejectedByGateway", RETRY),
        ("http:503", "gateway HTTP 503", RETRY),
        ("http:500", "gateway HTTP 500", RETRY),
        ("timeout", "the gateway did not answer in time", UNANSWERED),
        ("close", "the gateway's reply was cut off", UNANSWERED),
        ("garbage", "unreadable gateway reply", RETRY),
    ],
)
def test_a_transient_failure_queues_the_notification_again_with_backoff(
    session, gateway, task_queue, outcome, error, recorded
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, outcome)

    assert run_send(session, notification.id) == "retry"

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.QUEUED
    assert row.attempts == 1
    assert error in row.last_error
    assert row.lease_expires_at is None
    assert row.provider_message_id is None
    assert ceiling(1) / 2 - 0.01 <= delay_of(row) <= ceiling(1) + 0.01
    (attempt,) = attempts_of(session, notification.id)
    assert error in attempt.error
    assert attempt.outcome == recorded
    (republished,) = publications_of(notification.id, task_queue)
    assert republished["eta"] is not None


def test_the_retry_task_is_published_for_when_the_row_is_due(session, gateway, task_queue):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, 500)

    run_send(session, notification.id)

    row = fresh(session, notification.id)
    (republished,) = publications_of(notification.id, task_queue)
    eta = datetime.fromisoformat(republished["eta"])
    assert abs((eta - row.next_attempt_at).total_seconds()) < 1.0


def test_a_send_the_gateway_holds_past_sms_timeout_is_given_up_by_the_worker(
    session, gateway, sms_settings
):
    notification = make_notification(session, phone=PHONE)
    gateway.latency = GATEWAY_HANG  # it answers, but only long after SMS_TIMEOUT

    assert run_send(session, notification.id) == "retry"

    (attempt,) = attempts_of(session, notification.id)
    assert attempt.outcome == AttemptOutcome.UNANSWERED
    assert attempt.http_status is None
    assert attempt.error == "the gateway did not answer in time; it may have the message"
    assert attempt.duration_ms >= sms_settings.sms_timeout * 1000  # it waited that long
    # The worker hung up first: the gateway's answer went into a closed connection.
    (message,) = wait_for(lambda: [m for m in gateway.messages if m["reply"] != "pending"])
    assert message["reply"] == "cut"


def test_an_http_5xx_reply_is_kept_in_the_attempt(session, gateway):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, "http:503")

    run_send(session, notification.id)

    (attempt,) = attempts_of(session, notification.id)
    assert attempt.http_status == 503
    assert attempt.gateway_status_code is None
    assert "503 Service Unavailable" in attempt.raw_reply


def test_backoff_doubles_per_attempt_up_to_the_cap_then_the_notification_fails(
    session, gateway, task_queue, caplog
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, *[500] * MAX_ATTEMPTS)
    delays = []

    for attempt in range(1, MAX_ATTEMPTS):
        assert run_send(session, notification.id) == "retry"
        row = fresh(session, notification.id)
        assert (row.status, row.attempts) == (NotificationStatus.QUEUED, attempt)
        delays.append(delay_of(row))
        due_now(session, notification.id)
    run_send(session, notification.id)

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert row.attempts == MAX_ATTEMPTS
    assert "500" in row.last_error
    assert gateway.requests == MAX_ATTEMPTS
    # Each attempt as the gateway answered it, the last one too; its error is the row's.
    assert outcomes_of(session, notification.id) == [AttemptOutcome.RETRY] * MAX_ATTEMPTS
    assert attempts_of(session, notification.id)[-1].error == row.last_error
    for attempt, delay in enumerate(delays, start=1):
        assert ceiling(attempt) / 2 - 0.01 <= delay <= ceiling(attempt) + 0.01, (attempt, delay)
    assert max(delays) <= BACKOFF_CAP + 0.01
    assert BACKOFF_BASE * 2 ** (MAX_ATTEMPTS - 2) > BACKOFF_CAP  # the cap was reached
    # one retry task per retry, none after the last attempt
    assert len(publications_of(notification.id, task_queue)) == MAX_ATTEMPTS - 1
    assert task_records(caplog, logging.WARNING)


def test_a_message_whose_retries_ran_out_is_logged_as_failed_at_error(
    session, gateway, task_queue, caplog
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, *[500] * MAX_ATTEMPTS)
    for _ in range(MAX_ATTEMPTS - 1):
        assert run_send(session, notification.id) == "retry"
        due_now(session, notification.id)
    caplog.clear()

    with caplog.at_level(logging.INFO):
        outcome = run_send(session, notification.id)

    assert outcome == "failed"
    (record,) = [r for r in caplog.records if r.name == "worker.tasks"]
    assert record.levelno == logging.ERROR
    assert f"SMS {notification.id} failed after {MAX_ATTEMPTS} attempts" in record.getMessage()
    assert "trying again" not in caplog.text


def test_a_task_that_arrives_before_the_row_is_due_changes_nothing(session, gateway):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, 500)
    run_send(session, notification.id)
    before = fresh(session, notification.id)

    assert run_send(session, notification.id) == "skipped"

    after = fresh(session, notification.id)
    assert (after.status, after.attempts, after.updated_at) == (
        before.status,
        before.attempts,
        before.updated_at,
    )
    assert gateway.requests == 1


# -- operator errors: retried, but logged at ERROR ------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"), [(401, "RiskHold"), (402, "InvalidSenderId"), (405, "InsufficientBalance")]
)
def test_operator_status_codes_are_retried_and_logged_at_error(
    session, gateway, task_queue, caplog, code, name
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, code)

    with caplog.at_level(logging.INFO):
        assert run_send(session, notification.id) == "retry"

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.QUEUED
    assert row.last_error == f"gateway status {code} {name}"
    assert outcomes_of(session, notification.id) == [AttemptOutcome.RETRY_OPERATOR]
    assert len(publications_of(notification.id, task_queue)) == 1
    (record,) = task_records(caplog, logging.ERROR)
    assert str(notification.id) in record.getMessage()
    assert name in record.getMessage()


@pytest.mark.parametrize("status", [301, 400, 403, 404])  # 301: http:// where https:// is
def test_an_http_3xx_or_4xx_from_the_gateway_is_retried_and_logged_for_an_operator(
    session, gateway, task_queue, caplog, status
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, f"http:{status}")

    with caplog.at_level(logging.INFO):
        assert run_send(session, notification.id) == "retry"

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.QUEUED
    assert row.last_error == f"gateway HTTP {status}: check AT_API_URL and AT_USERNAME"
    assert outcomes_of(session, notification.id) == [AttemptOutcome.RETRY_OPERATOR]
    (record,) = task_records(caplog, logging.ERROR)
    assert "AT_API_URL" in record.getMessage()


def test_operator_status_codes_fail_once_attempts_are_used_up(session, gateway, caplog):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, *[405] * MAX_ATTEMPTS)

    for _ in range(MAX_ATTEMPTS):
        run_send(session, notification.id)
        due_now(session, notification.id)

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert row.attempts == MAX_ATTEMPTS
    assert outcomes_of(session, notification.id) == [AttemptOutcome.RETRY_OPERATOR] * MAX_ATTEMPTS
    assert attempts_of(session, notification.id)[-1].error == row.last_error
    assert len(task_records(caplog, logging.ERROR)) == MAX_ATTEMPTS


# -- permanent failures: FAILED at once -----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (403, "InvalidPhoneNumber"),
        (404, "UnsupportedNumberType"),
        (406, "UserInBlacklist"),
        (407, "CouldNotRoute"),
        (409, "DoNotDisturbRejection"),
    ],
)
def test_permanent_status_codes_fail_at_once_without_retry(
    session, gateway, task_queue, code, name
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, code)

    assert run_send(session, notification.id) == "permanent"

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert row.attempts == 1
    assert row.last_error == f"gateway status {code} {name}"
    assert row.provider_message_id is None
    assert gateway.requests == 1
    assert publications_of(notification.id, task_queue) == []
    (attempt,) = attempts_of(session, notification.id)
    assert attempt.gateway_status_code == code
    assert attempt.outcome == AttemptOutcome.PERMANENT


def test_bad_credentials_fail_at_once_and_log_an_error_naming_at_api_key(
    session, gateway, task_queue, caplog
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, "http:401")

    assert run_send(session, notification.id) == "bad_credentials"

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert "AT_API_KEY" in row.last_error
    assert publications_of(notification.id, task_queue) == []
    (record,) = task_records(caplog, logging.ERROR)
    assert "AT_API_KEY" in record.getMessage()
    (attempt,) = attempts_of(session, notification.id)
    assert attempt.http_status == 401
    assert attempt.outcome == AttemptOutcome.BAD_CREDENTIALS


def test_a_wrong_api_key_is_reported_as_bad_credentials(gateway, gateway_server):
    sender = AfricasTalkingSender(
        username="sandbox", api_key="not-the-key", base_url=gateway_server.url, timeout=2
    )

    result = sender.send(PHONE, "hello")

    assert result.outcome is Outcome.BAD_CREDENTIALS
    assert result.http_status == 401
    assert "not-the-key" not in (result.error or "") + (result.raw_reply or "")
    assert gateway.messages == []


@pytest.mark.parametrize("phone", [None, "", "+2541", "12345", "not a phone", "+999123456789"])
def test_a_missing_or_invalid_phone_fails_at_once_without_calling_the_gateway(
    session, gateway, task_queue, phone
):
    notification = make_notification(session, phone=phone)

    assert run_send(session, notification.id) == "permanent"

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert row.last_error == "the customer has no valid phone number"
    assert gateway.requests == 0
    assert publications_of(notification.id, task_queue) == []
    (attempt,) = attempts_of(session, notification.id)
    assert attempt.http_status is None
    assert attempt.error == "the customer has no valid phone number"
    assert attempt.outcome == AttemptOutcome.PERMANENT


# -- the claim makes a repeated task harmless -----------------------------------------------


def test_a_second_task_for_a_sent_notification_sends_nothing(session, gateway):
    notification = make_notification(session, phone=PHONE)
    run_send(session, notification.id)
    before = fresh(session, notification.id)

    assert run_send(session, notification.id) == "skipped"

    after = fresh(session, notification.id)
    assert gateway.requests == 1
    assert outcomes_of(session, notification.id) == [AttemptOutcome.ACCEPTED]
    assert (after.status, after.attempts, after.updated_at, after.provider_message_id) == (
        NotificationStatus.SENT,
        1,
        before.updated_at,
        before.provider_message_id,
    )


@pytest.mark.parametrize("status", ["SENDING", "DELIVERED", "FAILED"])
def test_a_task_for_a_row_not_queued_is_skipped(session, gateway, status):
    notification = make_notification(session, phone=PHONE)
    set_row(session, notification.id, "status = :status", status=status)

    assert run_send(session, notification.id) == "skipped"

    assert fresh(session, notification.id).status == status
    assert gateway.requests == 0


def test_a_task_for_an_unknown_notification_is_skipped(gateway):
    assert send_notification(str(uuid.uuid4())) == "skipped"
    assert gateway.requests == 0


# -- batches: the relay's tasks carry up to TASK_BATCH ids -----------------------------------------


def run_batch(session, ids) -> dict[str, int]:
    """The batch task in-process, as a worker runs it (see `run_send`)."""
    session.expunge_all()
    return send_batch([str(i) for i in ids])


def test_a_batch_sends_its_messages_side_by_side(session, gateway, sms_app, sms_settings):
    phones = [f"+2547110001{n:02d}" for n in range(outbox.TASK_BATCH)]
    notifications = [make_notification(session, phone=phone) for phone in phones]
    # A request an earlier test gave up on may still be held: let it end, then count afresh.
    deadline = time.monotonic() + GATEWAY_HANG + 1
    while gateway.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    gateway.reset()
    # Each reply takes a second: a batch's sends one after another could never overlap, and
    # side by side they all start well within it, however busy the machine.
    gateway.latency = 1.0
    sms_app.extensions["sms_sender"] = build_sender(replace(sms_settings, sms_timeout=5))
    try:
        outcomes = run_batch(session, [n.id for n in notifications])
    finally:
        del sms_app.extensions["sms_sender"]

    assert outcomes == {"accepted": outbox.TASK_BATCH}

    assert gateway.stats()["max_in_flight"] == outbox.TASK_BATCH
    assert sorted(m["to"] for m in gateway.messages) == phones
    for notification in notifications:
        row = fresh(session, notification.id)
        assert (row.status, row.attempts) == (NotificationStatus.SENT, 1)
        (attempt,) = attempts_of(session, notification.id)
        assert attempt.provider_message_id == row.provider_message_id is not None
        assert attempt.outcome == AttemptOutcome.ACCEPTED


def test_each_message_of_a_batch_gets_its_own_outcome(session, gateway, task_queue):
    sent, retried, refused = (
        make_notification(session, phone=phone)
        for phone in ("+254711000201", "+254711000202", "+254711000203")
    )
    no_phone = make_notification(session, phone=None)
    gateway.script("+254711000202", 500)
    gateway.script("+254711000203", 403)

    outcomes = run_batch(session, [sent.id, retried.id, refused.id, no_phone.id])

    assert outcomes == {"accepted": 1, "retry": 1, "permanent": 2}
    assert fresh(session, sent.id).status == NotificationStatus.SENT
    assert fresh(session, retried.id).status == NotificationStatus.QUEUED
    assert "500" in fresh(session, retried.id).last_error
    assert fresh(session, refused.id).status == NotificationStatus.FAILED
    assert "phone" in fresh(session, no_phone.id).last_error
    assert [outcomes_of(session, n.id) for n in (sent, retried, refused, no_phone)] == [
        [AttemptOutcome.ACCEPTED],
        [AttemptOutcome.RETRY],
        [AttemptOutcome.PERMANENT],
        [AttemptOutcome.PERMANENT],
    ]
    (republished,) = publications_of(retried.id, task_queue)
    assert republished["eta"] is not None
    assert not publications_of(sent.id, task_queue)
    assert not publications_of(refused.id, task_queue)


def test_a_batch_sends_only_what_is_its_to_send(session, gateway):
    queued = make_notification(session, phone=PHONE)
    already_sent = make_notification(session, phone="+254711000301")
    set_row(session, already_sent.id, "status = 'SENT'")

    outcomes = send_batch([str(queued.id), str(already_sent.id), str(uuid.uuid4()), "nonsense"])

    assert outcomes == {"accepted": 1, "skipped": 3}
    assert [m["to"] for m in gateway.messages] == [PHONE]
    assert fresh(session, already_sent.id).status == NotificationStatus.SENT


class BreaksOn:
    """A sender that raises for one number (a defect, or a failure nobody foresaw) and sends
    the others through the real one."""

    def __init__(self, inner, phone: str) -> None:
        self.inner, self.phone = inner, phone

    def send(self, phone: str, message: str):
        if phone == self.phone:
            raise RuntimeError("a defect in the sender")
        return self.inner.send(phone, message)


def test_a_send_that_raises_costs_its_batch_nothing_else(session, gateway, sms_app, caplog):
    phones = [f"+2547110004{n:02d}" for n in range(5)]
    notifications = [make_notification(session, phone=phone) for phone in phones]
    sms_app.extensions["sms_sender"] = BreaksOn(build_sender(sms_app.config["SETTINGS"]), phones[0])
    try:
        with caplog.at_level(logging.ERROR):
            outcomes = run_batch(session, [n.id for n in notifications])
    finally:
        del sms_app.extensions["sms_sender"]

    assert outcomes == {"accepted": 4, "retry": 1}
    assert sorted(m["to"] for m in gateway.messages) == phones[1:]  # each once
    broken = fresh(session, notifications[0].id)
    assert broken.status == NotificationStatus.QUEUED
    assert broken.last_error == "unexpected error in the worker: RuntimeError"
    assert [(a.outcome, a.error) for a in attempts_of(session, broken.id)] == [
        (AttemptOutcome.RETRY, broken.last_error)
    ]
    for notification in notifications[1:]:
        assert fresh(session, notification.id).status == NotificationStatus.SENT
        assert outcomes_of(session, notification.id) == [AttemptOutcome.ACCEPTED]
    assert any(r.exc_info and "failed unexpectedly" in r.getMessage() for r in caplog.records)


def test_a_batch_task_given_one_id_instead_of_a_list_sends_nothing(session, gateway, caplog):
    notification = make_notification(session, phone=PHONE)

    with caplog.at_level(logging.ERROR):
        assert send_batch(str(notification.id)) == {"skipped": 1}

    assert gateway.requests == 0
    assert fresh(session, notification.id).status == NotificationStatus.QUEUED  # the sweep's
    assert "needs a list of notification ids" in caplog.text


# -- what is kept of a reply ----------------------------------------------------------------


def test_the_raw_reply_kept_in_an_attempt_is_capped_at_1_kb(session):
    notification = make_notification(session, phone=PHONE)

    long_reply = SendResult(
        outcome=Outcome.RETRY, started_at=datetime.now(UTC), duration_ms=5, raw_reply="x" * 5000
    )
    held = claim_row(session, notification.id)
    settle_reply(session, held, long_reply, AttemptOutcome.RETRY, NotificationStatus.FAILED)

    (attempt,) = attempts_of(session, notification.id)
    assert RAW_REPLY_LIMIT == 1024
    assert attempt.raw_reply == "x" * 1024


def test_the_sender_keeps_at_most_1_kb_of_a_reply(gateway, gateway_server):
    sender = AfricasTalkingSender(
        username="sandbox", api_key=API_KEY, base_url=gateway_server.url, timeout=2
    )
    gateway.script(PHONE, "http:502")

    result = sender.send(PHONE, "hello")

    assert result.outcome is Outcome.RETRY
    assert 0 < len(result.raw_reply) <= 1024


# -- message texts --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(NotificationKind))
def test_a_message_names_the_company_a_short_reference_and_the_total(kind):
    order_id = uuid.UUID("0a1b2c3d-0000-4000-8000-000000000000")

    body = message_body(
        kind, company="Acme Duka", order_id=order_id, total=Decimal("1200"), currency="KES"
    )

    assert body.startswith("Acme Duka: order 0A1B2C3D for KES 1,200.00 ")
    assert len(body) <= SMS_LIMIT == 160


def test_a_queued_row_carries_the_body_from_the_company_name(session):
    notification = make_notification(session, phone=PHONE, total="99.50")

    order_ref = short_reference(notification.order_id)
    assert notification.body == (
        f"{COMPANY}: order {order_ref} for KES 99.50 received. We will confirm it shortly."
    )


@pytest.mark.parametrize("kind", list(NotificationKind))
def test_a_long_company_name_still_fits_one_sms_with_reference_and_total(kind):
    order_id = uuid.uuid4()

    body = message_body(
        kind, company="C" * 150, order_id=order_id, total=Decimal("999999999.99"), currency="KES"
    )

    assert len(body) <= SMS_LIMIT
    assert short_reference(order_id) in body
    assert "KES 999,999,999.99" in body


# -- backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 13))
def test_backoff_is_jittered_between_half_and_all_of_its_capped_ceiling(sms_settings, attempt):
    settings = replace(sms_settings, sms_backoff_base=15, sms_backoff_cap=600)
    top = min(600, 15 * 2 ** (attempt - 1))

    samples = [backoff(attempt, settings).total_seconds() for _ in range(300)]

    assert all(top / 2 <= sample <= top for sample in samples)
    assert len(set(samples)) > 1  # jitter


def test_backoff_never_exceeds_the_cap(sms_settings):
    assert max(backoff(40, sms_settings).total_seconds() for _ in range(100)) <= BACKOFF_CAP


# -- the sweep ------------------------------------------------------------------------------


def test_the_sweep_requeues_sending_rows_whose_lease_expired(session, task_queue):
    notification = make_notification(session, phone=PHONE)
    claim_row(session, notification.id)  # its worker dies mid-send
    set_row(session, notification.id, "lease_expires_at = clock_timestamp() - interval '1 s'")

    result = sweep()

    assert result["lease_expired"] == 1
    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.QUEUED
    assert row.lease_expires_at is None
    assert row.attempts == 1
    assert "lease expired" in row.last_error
    assert row.next_attempt_at <= datetime.now(UTC)
    assert outcomes_of(session, notification.id) == [AttemptOutcome.INTERRUPTED]
    assert len(publications_of(notification.id, task_queue)) == 1


def test_the_sweep_leaves_sending_rows_with_a_live_lease(session, task_queue):
    notification = make_notification(session, phone=PHONE)
    set_row(
        session,
        notification.id,
        "status = 'SENDING', lease_expires_at = clock_timestamp() + interval '30 seconds'",
    )

    result = sweep()

    assert result["lease_expired"] == 0
    assert fresh(session, notification.id).status == NotificationStatus.SENDING
    assert publications_of(notification.id, task_queue) == []


def test_the_sweep_republishes_overdue_queued_rows(session, task_queue):
    notification = make_notification(session, phone=PHONE)
    set_row(session, notification.id, "next_attempt_at = clock_timestamp() - interval '2 minutes'")

    result = sweep()

    assert result["republished"] == 1
    assert fresh(session, notification.id).status == NotificationStatus.QUEUED
    assert len(publications_of(notification.id, task_queue)) == 1


@pytest.mark.parametrize(
    "due", ["clock_timestamp() + interval '1 minute'", "clock_timestamp() - interval '10 seconds'"]
)
def test_the_sweep_leaves_rows_not_yet_due_or_within_the_grace(session, task_queue, due):
    notification = make_notification(session, phone=PHONE)
    set_row(session, notification.id, f"next_attempt_at = {due}")

    result = sweep()

    assert result["republished"] == 0
    assert publications_of(notification.id, task_queue) == []


def test_the_sweep_leaves_final_and_sent_rows_alone(session, task_queue):
    ids = []
    for status in ("SENT", "DELIVERED", "FAILED"):
        notification = make_notification(session, phone=PHONE)
        set_row(
            session,
            notification.id,
            "status = :status, next_attempt_at = clock_timestamp() - interval '1 hour', "
            "lease_expires_at = clock_timestamp() - interval '1 hour'",
            status=status,
        )
        ids.append((notification.id, status))

    assert sweep() == {
        "lease_expired": 0,
        "in_doubt": 0,
        "gave_up": 0,
        "republished": 0,
        "late_reports": 0,
        "keys_purged": 0,
    }

    for notification_id, status in ids:
        assert fresh(session, notification_id).status == status
        assert publications_of(notification_id, task_queue) == []


def test_the_sweep_purges_idempotency_keys_older_than_a_day(session):
    for key, age in (("old", "25 hours"), ("new", "1 hour")):
        session.execute(
            text(
                "INSERT INTO idempotency_keys (subject, key, request_hash, created_at) "
                "VALUES ('sweep-test', :key, 'h', now() - CAST(:age AS interval))"
            ),
            {"key": key, "age": age},
        )
    session.commit()

    assert sweep()["keys_purged"] == 1

    left = session.scalars(
        text("SELECT key FROM idempotency_keys WHERE subject = 'sweep-test'")
    ).all()
    assert left == ["new"]


def test_the_sweep_timings_meet_the_operating_promises():
    """DESIGN.md: QUEUED rows go within 90 s of Redis coming back, rows a dead worker left
    SENDING within 2 minutes; the sweep runs every 30 s."""
    sweep = celeryconfig.config(Settings())["beat_schedule"]["sweep-notifications"]
    interval = sweep["schedule"]
    assert sweep["task"] == "notifications.sweep"
    assert interval == 30.0
    assert Settings().sms_sweep_grace_seconds + interval <= 90
    lease = Settings().sms_lease_seconds
    assert lease + interval <= 120
    assert lease > celeryconfig.TASK_TIME_LIMIT
    # Sweeps piled up while no worker ran are dropped, all but the newest.
    assert sweep["options"]["expires"] <= interval


# -- senders --------------------------------------------------------------------------------


def test_without_an_api_key_development_uses_the_console_sender(sms_settings, caplog):
    settings = replace(sms_settings, at_api_key=None)

    with caplog.at_level(logging.INFO):
        sender = build_sender(settings)
        result = sender.send(PHONE, "Acme Duka: order 1 received.")

    assert isinstance(sender, ConsoleSender)
    assert result.outcome is Outcome.ACCEPTED
    assert result.message_id.startswith("console-")
    assert "AT_API_KEY is not set" in caplog.text
    assert "Acme Duka: order 1 received." in caplog.text


def test_the_console_sender_marks_the_notification_sent_without_the_gateway(
    session, gateway, sms_settings
):
    console_app = create_app(replace(sms_settings, at_api_key=None))
    notification = make_notification(session, phone=PHONE)

    try:
        with bound(console_app):
            assert run_send(session, notification.id) == "accepted"
    finally:
        dispose(console_app)

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.SENT
    assert row.provider_message_id.startswith("console-")
    assert outcomes_of(session, notification.id) == [AttemptOutcome.ACCEPTED]
    assert gateway.requests == 0


def test_with_an_api_key_the_africas_talking_sender_uses_at_api_url(sms_settings):
    sender = build_sender(sms_settings)

    assert isinstance(sender, AfricasTalkingSender)
    assert sender.service._baseUrl == f"{sms_settings.at_api_url}/version1"
    assert sender.timeout[1] == sms_settings.sms_timeout


# -- celeryconfig ---------------------------------------------------------------------------


def test_a_backoff_cap_a_redelivery_would_overtake_is_refused_at_start(sms_settings):
    """Redis hands an unacknowledged task to another worker after its visibility timeout: a
    retry waiting longer would send its SMS twice."""
    longest_countdown = max(
        backoff(attempt, sms_settings).total_seconds() for attempt in range(1, 50)
    )
    assert longest_countdown + celeryconfig.TASK_TIME_LIMIT < celeryconfig.VISIBILITY_TIMEOUT
    assert Settings.from_env({"SMS_BACKOFF_CAP": "3000"}).sms_backoff_cap == 3000

    with pytest.raises(ConfigError, match="SMS_BACKOFF_CAP must be below 3555 seconds"):
        Settings.from_env({"SMS_BACKOFF_CAP": "3555"})


def test_a_worker_with_a_backoff_cap_beyond_the_visibility_timeout_does_not_start():
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    result = subprocess.run(
        [sys.executable, "-m", "celery", "--app", "worker.main", "worker", "--help"],
        cwd=ROOT,
        env={**environ, "SMS_BACKOFF_CAP": "4000"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "configuration error: SMS_BACKOFF_CAP must be below" in result.stderr
    assert "Traceback" not in result.stderr


# -- edges of the sender, the relay and the task binding ------------------------------------


def test_without_at_api_url_the_sdk_talks_to_africas_talking_itself():
    sender = AfricasTalkingSender(username="sandbox", api_key=API_KEY)

    assert "africastalking.com" in sender.service._baseUrl
    assert sender.service._baseUrl.endswith("/version1")


def test_the_sender_goes_through_the_proxy_the_environment_names(
    gateway, gateway_server, monkeypatch
):
    # A host that does not resolve, reached only through the proxy: the local gateway, which
    # answers the proxied request for it.
    monkeypatch.setenv("HTTP_PROXY", gateway_server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sender = AfricasTalkingSender(
        username="sandbox", api_key=API_KEY, base_url="http://sms-gateway.invalid", timeout=2
    )
    monkeypatch.delenv("HTTP_PROXY")  # read when the sender was built, not on every send

    result = sender.send(PHONE, "via the proxy")

    assert result.outcome is Outcome.ACCEPTED, result.error
    assert [message["message"] for message in gateway.messages] == ["via the proxy"]


@pytest.mark.parametrize("outcome", ["timeout", "close"])
def test_a_send_the_gateway_got_but_never_answered_is_in_doubt(
    session, gateway, task_queue, outcome
):
    """The gateway may have taken it (it read the request): the retry may be a second copy,
    and the operator's list of SMS that may have gone twice must show it."""
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, outcome)
    counted = in_doubt_count()

    assert run_send(session, notification.id) == "retry"

    (attempt,) = attempts_of(session, notification.id)
    assert attempt.outcome == AttemptOutcome.UNANSWERED
    assert "it may have the message" in attempt.error
    listed = list_notifications(session, actor=ADMIN, in_doubt=True, first=100)
    assert notification.id in {row.id for row in listed.items}
    assert in_doubt_count() == counted + 1


def test_a_send_that_never_reached_the_gateway_is_not_in_doubt(session, gateway, task_queue):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, 500)  # answered: the gateway says it did not take it
    counted = in_doubt_count()

    assert run_send(session, notification.id) == "retry"

    (attempt,) = attempts_of(session, notification.id)
    assert attempt.outcome == AttemptOutcome.RETRY
    listed = list_notifications(session, actor=ADMIN, in_doubt=True, first=100)
    assert notification.id not in {row.id for row in listed.items}
    assert in_doubt_count() == counted


ADMIN = Actor(subject="operator", is_admin=True)


def in_doubt_count() -> float:
    return REGISTRY.get_sample_value("sms_in_doubt_total") or 0.0


def test_a_gateway_nobody_answers_at_is_unreachable_not_slow():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = AfricasTalkingSender(
        username="sandbox", api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", timeout=1
    )

    result = sender.send(PHONE, "hello")

    assert result.outcome is Outcome.RETRY
    assert result.error == "could not reach the gateway: NewConnectionError"


class AuthenticatingProxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy that wants Basic credentials, and answers for the gateway behind it."""

    credentials = "Basic " + base64.b64encode(b"smsuser:s3cret").decode()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Proxy-Authorization") != self.credentials:
            self.send_response(407)
            self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        recipient = {"statusCode": 101, "status": "Success", "messageId": "ATXid_p", "cost": "1"}
        body = json.dumps({"SMSMessageData": {"Message": "Sent", "Recipients": [recipient]}})
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_args: object) -> None:
        pass


def test_credentials_in_the_proxy_url_authenticate_the_sender_to_the_proxy(monkeypatch):
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AuthenticatingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("HTTP_PROXY", f"http://smsuser:s3cret@127.0.0.1:{proxy.server_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        sender = AfricasTalkingSender(
            username="sandbox", api_key=API_KEY, base_url="http://sms-gateway.invalid", timeout=2
        )
        result = sender.send(PHONE, "via an authenticating proxy")
    finally:
        proxy.shutdown()
        proxy.server_close()

    assert result.outcome is Outcome.ACCEPTED, result.error
    assert result.message_id == "ATXid_p"


def test_a_ca_bundle_or_directory_named_by_the_environment_is_what_tls_trusts(
    monkeypatch, tmp_path
):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    for path in (bundle, tmp_path):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(path))
        sender = AfricasTalkingSender(username="sandbox", api_key=API_KEY)

        assert sender.service.http.verify == str(path)


def test_a_number_the_sdk_refuses_is_a_permanent_failure_without_a_request(gateway, gateway_server):
    sender = AfricasTalkingSender(
        username="sandbox", api_key=API_KEY, base_url=gateway_server.url, timeout=2
    )

    result = sender.send("0711 000 001", "hello")

    assert result.outcome is Outcome.PERMANENT
    assert "Invalid phone number" in result.error
    assert gateway.requests == 0


@pytest.fixture(scope="session")
def silent_broker() -> Iterator[SilentServer]:
    """A Redis that took the connection and went quiet, for the whole run: a relay stuck on
    it stays stuck, and never drops what it holds under another test's counters."""
    server = SilentServer()
    yield server
    server.close()


def backlog_full() -> float:
    series = ("sms_relay_dropped_total", {"reason": "backlog_full"})
    return REGISTRY.get_sample_value(*series) or 0.0


def test_a_full_relay_backlog_drops_ids_for_the_sweep_and_never_blocks(silent_broker, caplog):
    silent = Celery("tests", broker=silent_broker.url("redis", "/0"), set_as_current=False)
    relay = outbox.Relay(silent, "nowhere")
    relay.submit([uuid.uuid4()])
    silent_broker.wait_for_a_request()  # the relay publishes it, and waits for ever
    dropped = backlog_full()

    with caplog.at_level(logging.WARNING, logger="models.outbox"):
        more = [uuid.uuid4() for _ in range(outbox.BACKLOG_LIMIT + 3)]
        returns(lambda: relay.submit(more), "submitting to a full backlog")

    assert backlog_full() == dropped + 3  # what did not fit, left to the sweep
    assert [r.getMessage() for r in caplog.records if r.name == "models.outbox"] == [
        "outbox relay backlog full; the sweep will send the rest"
    ]


# -- message text and gateway answers added after review ----------------------------------


def test_typographic_quotes_in_the_company_name_keep_the_sms_in_gsm_7():
    from models.messages import message_body, sms_length

    body = message_body(
        NotificationKind.ORDER_PLACED,
        company="Mama Mboga\u2019s Shop",
        order_id=uuid.uuid4(),
        total=Decimal("1200"),
        currency="KES",
    )

    assert "Mama Mboga's Shop" in body
    assert sms_length(body) == (len(body), 160)


def test_a_non_gsm_company_name_still_fits_one_ucs2_sms():
    from models.messages import message_body, sms_length

    body = message_body(
        NotificationKind.ORDER_CONFIRMED,
        company="\u041c\u0430\u0433\u0430\u0437\u0438\u043d \u0443 \u0434\u043e\u043c\u0430",
        order_id=uuid.uuid4(),
        total=Decimal("1200"),
        currency="KES",
    )

    length, fits = sms_length(body)
    assert length <= fits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Order 1A2B for KES 1,200.00", (27, 160)),
        ("Duka {Bora} 5€", (17, 160)),  # {, } and the euro sign take two places each
        ("Café Äpfel", (10, 160)),  # accented letters of GSM-7 take one
        ("Магазин {1}", (11, 70)),  # Cyrillic: UCS-2
    ],
)
def test_sms_length_counts_as_the_network_does(text, expected):
    from models.messages import sms_length

    assert sms_length(text) == expected


# -- leases, stale claims and late reports ------------------------------------------------------


def test_a_lease_that_expires_on_the_last_attempt_fails_the_sms_instead_of_looping(
    session, gateway, task_queue, caplog
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, *[500] * (MAX_ATTEMPTS - 1))
    for _ in range(MAX_ATTEMPTS - 1):
        assert run_send(session, notification.id) == "retry"
        due_now(session, notification.id)
    claim_row(session, notification.id)  # the last attempt, whose worker dies mid-send
    set_row(session, notification.id, "lease_expires_at = clock_timestamp() - interval '1 s'")
    retries = len(publications_of(notification.id, task_queue))

    with caplog.at_level(logging.INFO):
        result = sweep()

    assert (result["gave_up"], result["lease_expired"]) == (1, 0)
    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert "giving up" in row.last_error
    assert outcomes_of(session, notification.id) == [AttemptOutcome.RETRY] * (MAX_ATTEMPTS - 1) + [
        AttemptOutcome.INTERRUPTED
    ]
    assert len(publications_of(notification.id, task_queue)) == retries  # none more


def late_verdict() -> SendResult:
    return SendResult(
        outcome=Outcome.PERMANENT,
        started_at=datetime.now(UTC),
        duration_ms=5,
        error="the first worker's late verdict",
    )


def test_a_claim_that_lost_its_lease_cannot_settle_the_sms(session, task_queue):
    notification = make_notification(session, phone=PHONE)
    stale = claim_row(session, notification.id)  # the first worker, which then stalls
    session.expunge(stale.notification)  # that worker's own copy of the row
    # Meanwhile its lease ran out, the sweep took the row back and another worker claimed it.
    set_row(session, notification.id, "lease_expires_at = clock_timestamp() - interval '1 s'")
    sweep()
    live = claim_row(session, notification.id)

    assert not settle_reply(
        session, stale, late_verdict(), AttemptOutcome.PERMANENT, NotificationStatus.FAILED
    )

    row = fresh(session, notification.id)
    assert (row.status, row.claim) == (NotificationStatus.SENDING, live.notification.claim)
    assert row.last_error == "the worker stopped mid-send (lease expired); sending again"


def test_a_resend_never_lets_an_old_claim_settle_the_new_send(session, task_queue, admin):
    notification = make_notification(session, phone=PHONE)
    stale = claim_row(session, notification.id)  # stalls; its lease runs out
    session.expunge(stale.notification)  # that worker's own copy of the row
    set_row(session, notification.id, "lease_expires_at = clock_timestamp() - interval '1 s'")
    set_row(session, notification.id, "attempts = :n", n=MAX_ATTEMPTS)
    sweep()  # the last attempt: FAILED
    assert fresh(session, notification.id).status == NotificationStatus.FAILED
    resent = admin.execute(
        "mutation($id: ID!) { resendNotification(id: $id) { success notification { attempts } } }",
        {"id": str(notification.id)},
    )["resendNotification"]
    assert resent == {"success": True, "notification": {"attempts": 0}}
    live = claim_row(session, notification.id)  # attempt 1 again, but a claim never seen before

    assert live.notification.attempts == 1
    assert live.notification.claim > stale.notification.claim
    assert not settle_reply(
        session, stale, late_verdict(), AttemptOutcome.PERMANENT, NotificationStatus.FAILED
    )
    assert fresh(session, notification.id).status == NotificationStatus.SENDING


def test_the_sweep_applies_a_report_that_raced_ahead_of_sent(sms_app, session):
    notification = make_notification(session, phone=PHONE)
    message_id = f"ATXid_{uuid.uuid4().hex}"
    response = sms_app.test_client().post(
        "/callbacks/africastalking/delivery?key=cb-secret",
        data={"id": message_id, "status": "Success", "phoneNumber": PHONE},
    )
    assert response.status_code == 200
    # The worker's SENT lands after the report was stored as unknown, and does not see it.
    set_row(
        session,
        notification.id,
        "status = 'SENT', attempts = 1, provider_message_id = :mid",
        mid=message_id,
    )

    assert sweep()["late_reports"] == 1

    assert fresh(session, notification.id).status == NotificationStatus.DELIVERED


@pytest.mark.parametrize("message", ["InvalidSenderId", "InsufficientBalance"])
def test_a_refusal_of_the_whole_request_is_an_operators_retry(
    session, gateway, task_queue, caplog, message
):
    notification = make_notification(session, phone=PHONE)
    gateway.script(PHONE, f"batch:{message}")

    with caplog.at_level(logging.INFO):
        assert run_send(session, notification.id) == "retry"

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.QUEUED
    assert row.last_error == f"gateway refused the message: {message}"
    (record,) = task_records(caplog, logging.ERROR)
    assert message in record.getMessage()
