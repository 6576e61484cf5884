# ruff: noqa: F811 - pytest fixtures imported from tests.sms_support are used by name
"""Delivery reports at POST /callbacks/africastalking/delivery?key=...: the shared secret,
what each status does to a notification, final states, repeats, unknown and early reports,
and the secret kept out of every log."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import select

from models.delivery_reports import DeliveryReport
from models.notifications import NotificationStatus
from tests.sms_support import (  # noqa: F401 - fixtures, used by name
    CALLBACK_SECRET,
    DELIVERY_PATH,
    ROOT,
    claim_row,
    committed_sms,
    fresh,
    gateway_server,
    make_notification,
    set_row,
    settle_reply,
    sms_app,
    sms_settings,
)
from worker.senders import Outcome, SendResult


def mark_sent(session, held, *, message_id: str, cost: str | None) -> bool:
    """What the worker records when the gateway took the message; whether the row moved."""
    reply = SendResult(
        outcome=Outcome.ACCEPTED,
        started_at=datetime.now(UTC),
        duration_ms=1,
        message_id=message_id,
        cost=cost,
    )
    return settle_reply(session, held, reply)


PHONE = "+254711000009"
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
FAILED_STATUSES = [
    ("Failed", "DeliveryFailure"),
    ("Rejected", "UserInBlacklist"),
    ("AbsentSubscriber", "AbsentSubscriber"),
    ("Expired", "UserMsisdnExpired"),
]


@pytest.fixture
def client(sms_app, session):
    return sms_app.test_client()


def sent_notification(session, message_id: str | None = None):
    """A notification the gateway accepted as `message_id` (data set up with SQL)."""
    notification = make_notification(session, phone=PHONE)
    message_id = message_id or f"ATXid_{uuid.uuid4().hex}"
    set_row(
        session,
        notification.id,
        "status = 'SENT', attempts = 1, provider_message_id = :mid, cost = 'KES 0.8000', "
        "sent_at = clock_timestamp()",
        mid=message_id,
    )
    return notification, message_id


def post_report(
    client,
    message_id: str,
    status: str,
    failure_reason: str | None = None,
    *,
    key: str | None = CALLBACK_SECRET,
    **extra: str,
):
    form = {
        "id": message_id,
        "status": status,
        "phoneNumber": PHONE,
        "networkCode": "63902",
        "retryCount": "0",
        **extra,
    }
    if failure_reason is not None:
        form["failureReason"] = failure_reason
    query = "" if key is None else f"?key={key}"
    return client.post(f"{DELIVERY_PATH}{query}", data=form)


def reports_for(session, message_id: str) -> list[DeliveryReport]:
    session.expire_all()
    return list(
        session.scalars(
            select(DeliveryReport)
            .where(DeliveryReport.provider_message_id == message_id)
            .order_by(DeliveryReport.id)
        )
    )


# -- the shared secret ----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["wrong", "cb-secre", "cb-secretX", "CB-SECRET", "", None])
def test_a_wrong_or_missing_key_is_refused_and_nothing_is_stored(session, client, key):
    notification, message_id = sent_notification(session)

    response = post_report(client, message_id, "Success", key=key)

    assert response.status_code == 403
    assert response.get_json() == {"error": "forbidden"}
    assert reports_for(session, message_id) == []
    assert fresh(session, notification.id).status == NotificationStatus.SENT


def test_the_key_in_the_form_instead_of_the_query_is_refused(session, client):
    _, message_id = sent_notification(session)

    response = client.post(
        DELIVERY_PATH, data={"id": message_id, "status": "Success", "key": CALLBACK_SECRET}
    )

    assert response.status_code == 403
    assert reports_for(session, message_id) == []


def test_without_a_configured_secret_every_report_is_refused(app, session):
    _, message_id = sent_notification(session)

    response = post_report(app.test_client(), message_id, "Success", key="")

    assert app.config["SETTINGS"].at_callback_secret is None
    assert response.status_code == 403
    assert reports_for(session, message_id) == []


def test_a_report_without_id_or_status_is_a_bad_request(session, client):
    notification, message_id = sent_notification(session)

    no_status = client.post(f"{DELIVERY_PATH}?key={CALLBACK_SECRET}", data={"id": message_id})
    no_id = client.post(f"{DELIVERY_PATH}?key={CALLBACK_SECRET}", data={"status": "Success"})

    assert (no_status.status_code, no_id.status_code) == (400, 400)
    assert reports_for(session, message_id) == []
    assert fresh(session, notification.id).status == NotificationStatus.SENT


# -- what a report does ---------------------------------------------------------------------


def test_success_marks_the_notification_delivered(session, client):
    notification, message_id = sent_notification(session)

    response = post_report(client, message_id, "Success")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.DELIVERED
    assert row.delivered_at is not None
    assert row.delivered_at >= row.sent_at


def test_the_report_is_stored_raw_and_linked_to_its_notification(session, client):
    notification, message_id = sent_notification(session)

    post_report(client, message_id, "Success")

    (report,) = reports_for(session, message_id)
    assert report.notification_id == notification.id
    assert report.status == "Success"
    assert report.failure_reason is None
    assert report.raw == {
        "id": message_id,
        "status": "Success",
        "phoneNumber": PHONE,
        "networkCode": "63902",
        "retryCount": "0",
    }


@pytest.mark.parametrize(("status", "reason"), FAILED_STATUSES)
def test_a_failed_delivery_marks_the_notification_failed_with_the_reason(
    session, client, status, reason
):
    notification, message_id = sent_notification(session)

    assert post_report(client, message_id, status, reason).status_code == 200

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert reason in row.last_error
    assert row.delivered_at is None
    (report,) = reports_for(session, message_id)
    assert report.failure_reason == reason


def test_a_failed_delivery_without_a_reason_names_the_status(session, client):
    notification, message_id = sent_notification(session)

    post_report(client, message_id, "Rejected")

    assert fresh(session, notification.id).last_error == "delivery failed: Rejected"


@pytest.mark.parametrize("status", ["Sent", "Submitted", "Buffered"])
def test_a_report_still_on_its_way_keeps_the_notification_sent(session, client, status):
    notification, message_id = sent_notification(session)

    assert post_report(client, message_id, status).status_code == 200

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.SENT
    assert row.delivered_at is None
    assert [r.status for r in reports_for(session, message_id)] == [status]


def test_an_unheard_of_status_is_stored_and_keeps_the_notification_sent(session, client):
    notification, message_id = sent_notification(session)

    assert post_report(client, message_id, "Teleported").status_code == 200

    assert fresh(session, notification.id).status == NotificationStatus.SENT
    assert len(reports_for(session, message_id)) == 1


# -- final states and repeats ---------------------------------------------------------------


def test_a_delivered_notification_stays_delivered_when_a_failure_follows(session, client):
    notification, message_id = sent_notification(session)
    post_report(client, message_id, "Success")
    delivered = fresh(session, notification.id)

    assert post_report(client, message_id, "Failed", "DeliveryFailure").status_code == 200

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.DELIVERED
    assert row.last_error is None
    assert row.delivered_at == delivered.delivered_at
    assert len(reports_for(session, message_id)) == 2


def test_a_failed_notification_stays_failed_when_success_follows(session, client):
    notification, message_id = sent_notification(session)
    post_report(client, message_id, "AbsentSubscriber", "AbsentSubscriber")

    post_report(client, message_id, "Success")

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert row.delivered_at is None
    assert "AbsentSubscriber" in row.last_error


@pytest.mark.parametrize("late", ["Sent", "Submitted", "Buffered"])
def test_a_progress_report_arriving_after_the_final_one_changes_nothing(session, client, late):
    notification, message_id = sent_notification(session)
    post_report(client, message_id, "Success")

    post_report(client, message_id, late)

    assert fresh(session, notification.id).status == NotificationStatus.DELIVERED


def test_a_repeated_report_changes_nothing(session, client):
    notification, message_id = sent_notification(session)
    post_report(client, message_id, "Success")
    first = fresh(session, notification.id)

    responses = [post_report(client, message_id, "Success", retryCount=str(n)) for n in (1, 2)]

    row = fresh(session, notification.id)
    assert [r.status_code for r in responses] == [200, 200]
    assert (row.status, row.delivered_at, row.updated_at) == (
        NotificationStatus.DELIVERED,
        first.delivered_at,
        first.updated_at,
    )
    assert len(reports_for(session, message_id)) == 3


# -- unknown and early reports --------------------------------------------------------------


def test_a_report_for_an_unknown_message_is_accepted_stored_and_logged(session, client, caplog):
    message_id = f"ATXid_unknown_{uuid.uuid4().hex}"

    with caplog.at_level(logging.INFO):
        response = post_report(client, message_id, "Success")

    assert response.status_code == 200
    (report,) = reports_for(session, message_id)
    assert report.notification_id is None
    assert report.raw["id"] == message_id
    assert report.raw["phoneNumber"] == PHONE
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(message_id in r.getMessage() for r in warnings)


@pytest.mark.parametrize(
    ("status", "expected"),
    [("Success", NotificationStatus.DELIVERED), ("Failed", NotificationStatus.FAILED)],
)
def test_a_report_that_arrives_before_sent_is_recorded_is_applied_then(
    session, client, status, expected
):
    notification = make_notification(session, phone=PHONE)
    held = claim_row(session, notification.id)
    message_id = f"ATXid_{uuid.uuid4().hex}"

    assert post_report(client, message_id, status).status_code == 200
    assert fresh(session, notification.id).status == NotificationStatus.SENDING

    assert mark_sent(session, held, message_id=message_id, cost="KES 0.8000")

    row = fresh(session, notification.id)
    assert row.status == expected
    assert row.provider_message_id == message_id
    assert row.sent_at is not None


def test_early_reports_are_applied_in_the_order_they_came(session, client):
    notification = make_notification(session, phone=PHONE)
    held = claim_row(session, notification.id)
    message_id = f"ATXid_{uuid.uuid4().hex}"
    for status in ("Buffered", "Success", "Failed"):
        post_report(client, message_id, status)

    mark_sent(session, held, message_id=message_id, cost=None)

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.DELIVERED
    assert row.last_error is None


# -- odd input ------------------------------------------------------------------------------


def test_nul_characters_in_a_report_are_dropped(session, client):
    notification, message_id = sent_notification(session)

    response = post_report(client, message_id, "Failed", "Delivery\x00Failure")

    assert response.status_code == 200
    assert fresh(session, notification.id).last_error == "delivery failed: DeliveryFailure"


def test_a_long_failure_reason_is_stored_not_a_server_error(session, client):
    """The view keeps up to 200 characters of each field; delivery_reports.failure_reason
    holds 100. A gateway that got a 500 would retry the report for ever."""
    notification, message_id = sent_notification(session)

    response = post_report(client, message_id, "Failed", "R" * 150)

    assert response.status_code == 200
    assert fresh(session, notification.id).status == NotificationStatus.FAILED
    (report,) = reports_for(session, message_id)
    assert report.failure_reason.startswith("R" * 100)


def test_get_is_not_allowed(client):
    response = client.get(f"{DELIVERY_PATH}?key={CALLBACK_SECRET}")

    assert response.status_code == 405


# -- the key is never logged ----------------------------------------------------------------


def test_the_key_never_appears_in_the_app_logs(session, client, caplog):
    _, message_id = sent_notification(session)

    with caplog.at_level(logging.DEBUG):
        post_report(client, message_id, "Success", key="wrong-guess")
        post_report(client, message_id, "Success")
        post_report(client, f"ATXid_unknown_{uuid.uuid4().hex}", "Failed", "DeliveryFailure")
        client.post(f"{DELIVERY_PATH}?key={CALLBACK_SECRET}", data={"id": message_id})

    assert caplog.records  # the unknown id at least was logged
    assert CALLBACK_SECRET not in caplog.text
    assert "wrong-guess" not in caplog.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_key_never_appears_in_the_web_process_logs(database_url, committed_sms):
    """The `web` process of the Procfile: gunicorn with gunicorn.conf.py, access log on."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AT_", "APP_ENV"))},
        "DATABASE_URL": database_url,
        "AT_CALLBACK_SECRET": CALLBACK_SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
    }
    process = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "--config",
            "gunicorn.conf.py",
            "web:create_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not start within 20 s"
            time.sleep(0.1)
        form = {"id": f"ATXid_{uuid.uuid4().hex}", "status": "Success", "phoneNumber": PHONE}
        accepted = requests.post(
            f"{base}{DELIVERY_PATH}?key={CALLBACK_SECRET}", data=form, timeout=5
        )
        refused = requests.post(f"{base}{DELIVERY_PATH}?key=wrong-guess", data=form, timeout=5)
    finally:
        process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
        output, _ = process.communicate(timeout=20)

    assert (accepted.status_code, refused.status_code) == (200, 403)
    # The access log is on: a JSON line per request, like the app's own.
    access = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"gunicorn.access"' in line
    ]
    delivery = [entry for entry in access if DELIVERY_PATH in entry["message"]]
    assert [entry["status"] for entry in delivery] == [200, 403]
    assert delivery[0]["message"] == f"POST {DELIVERY_PATH} 200"
    assert delivery[0]["request_id"] == accepted.headers["X-Request-ID"]
    assert delivery[0]["duration_ms"] >= 0
    assert CALLBACK_SECRET not in output
    assert "wrong-guess" not in output


def test_delivered_at_is_a_timezone_aware_moment(session, client):
    notification, message_id = sent_notification(session)

    post_report(client, message_id, "Success")

    delivered_at = fresh(session, notification.id).delivered_at
    assert delivered_at.tzinfo is not None
    assert abs((datetime.now(UTC) - delivered_at).total_seconds()) < 60


def test_recording_sent_twice_changes_nothing_the_second_time(session):
    notification = make_notification(session, phone=PHONE)
    held = claim_row(session, notification.id)
    message_id = f"ATXid_{uuid.uuid4().hex}"
    assert mark_sent(session, held, message_id=message_id, cost=None)
    before = fresh(session, notification.id)

    assert mark_sent(session, held, message_id="ATXid_other", cost=None) is False

    after = fresh(session, notification.id)
    assert (after.provider_message_id, after.updated_at) == (message_id, before.updated_at)
