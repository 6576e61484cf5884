"""Celery tasks: send one notification, and the periodic sweep. Thin: the rules for each
state change live in `models.notifications`, the gateway's codes in `worker.senders`."""

from __future__ import annotations

import logging
import random
import uuid
from datetime import timedelta

from flask import current_app

from models.db import db
from models.notifications import (
    claim,
    due_for_sweep,
    mark_failed,
    mark_retry,
    mark_sent,
    match_late_reports,
    record_attempt,
    requeue_expired_leases,
    sendable_phone,
)
from models.orders import purge_expired_idempotency_keys
from web.config import Settings
from web.logs import request_id_var
from web.metrics import GATEWAY_LATENCY, SMS_ATTEMPTS, SWEEP_RESENDS
from worker.celery_app import celery_app
from worker.senders import Outcome, SendResult, SmsSender, build_sender

log = logging.getLogger(__name__)

# Far longer than a send can take: connect 3 s, then SMS_TIMEOUT (at most 30 s).
LEASE = timedelta(seconds=60)
SWEEP_GRACE = timedelta(seconds=45)  # a row this overdue lost its task (or never had one)
SWEEP_BATCH = 500


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _sender() -> SmsSender:
    extensions = current_app.extensions
    if "sms_sender" not in extensions:
        extensions["sms_sender"] = build_sender(_settings())
    return extensions["sms_sender"]


def backoff(attempt: int, settings: Settings) -> timedelta:
    """Exponential backoff with jitter, capped: about base * 2^(attempt-1) seconds."""
    ceiling = min(settings.sms_backoff_cap, settings.sms_backoff_base * 2 ** (attempt - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - not crypto


@celery_app.task(name="notifications.send")
def send_notification(notification_id: str) -> str:
    """Claim the notification, send it once, record the attempt, decide what comes next."""
    settings = _settings()
    session = db.session
    notification = claim(session, notification_id=uuid.UUID(notification_id), lease=LEASE)
    session.commit()  # the lease is ours before we touch the network, never during
    if notification is None:
        return "skipped"
    request_id_var.set(notification.request_id)

    phone = sendable_phone(notification, settings.default_region)
    if phone is None:
        result = SendResult(
            outcome=Outcome.PERMANENT,
            started_at=notification.updated_at,
            duration_ms=0,
            error="the customer has no valid phone number",
        )
    else:
        result = _sender().send(phone, notification.body)
        GATEWAY_LATENCY.observe(result.duration_ms / 1000)
    SMS_ATTEMPTS.labels(result.outcome.value).inc()

    record_attempt(session, notification, result)
    retry_in = None
    if result.outcome is Outcome.ACCEPTED:
        mark_sent(session, notification, message_id=result.message_id, cost=result.cost)
    elif result.outcome in (Outcome.RETRY, Outcome.RETRY_OPERATOR) and (
        notification.attempts < settings.sms_max_attempts
    ):
        retry_in = backoff(notification.attempts, settings)
        mark_retry(session, notification, error=result.error or "", delay=retry_in)
    else:
        mark_failed(session, notification, error=result.error or "")
    session.commit()

    if result.outcome in (Outcome.RETRY_OPERATOR, Outcome.BAD_CREDENTIALS):
        log.error("SMS %s needs an operator: %s", notification.id, result.error)
    elif result.outcome is not Outcome.ACCEPTED:
        log.warning(
            "SMS %s attempt %d failed: %s", notification.id, notification.attempts, result.error
        )
    if retry_in is not None:
        send_notification.apply_async((notification_id,), countdown=retry_in.total_seconds())
        return "retry"
    return result.outcome.value


@celery_app.task(name="notifications.sweep")
def sweep() -> dict[str, int]:
    """Every 30 s: take back leases of dead workers, re-publish overdue QUEUED rows, and
    forget idempotency keys older than a day."""
    session = db.session
    requeued, gave_up = requeue_expired_leases(
        session, limit=SWEEP_BATCH, max_attempts=_settings().sms_max_attempts
    )
    session.commit()
    if gave_up:
        log.error("%d SMS failed: their worker stopped mid-send on every attempt", gave_up)
    if requeued:
        SWEEP_RESENDS.labels("lease_expired").inc(len(requeued))
        log.warning("re-sending %d SMS whose worker stopped mid-send", len(requeued))
    due = due_for_sweep(session, grace=SWEEP_GRACE, limit=SWEEP_BATCH)
    session.commit()
    SWEEP_RESENDS.labels("overdue").inc(len(due))
    for notification_id in {*requeued, *due}:
        send_notification.apply_async((str(notification_id),))
    matched = match_late_reports(session, within=timedelta(hours=1), limit=SWEEP_BATCH)
    purged = purge_expired_idempotency_keys(session)
    session.commit()
    return {
        "lease_expired": len(requeued),
        "gave_up": gave_up,
        "republished": len(due),
        "late_reports": matched,
        "keys_purged": purged,
    }
