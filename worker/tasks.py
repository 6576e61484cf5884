"""Celery tasks: send notifications (a batch side by side, or one), and the periodic sweep.
Thin: the rules for each state change live in `models.notifications`, the gateway's codes in
`worker.senders`."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app

from models.db import db
from models.notifications import (
    Notification,
    claim,
    due_for_sweep,
    mark_failed,
    mark_retry,
    mark_sent_many,
    match_late_reports,
    record_attempts,
    requeue_expired_leases,
    sendable_phone,
)
from models.orders import purge_expired_idempotency_keys
from web.config import Settings
from web.logs import request_id_var
from web.metrics import GATEWAY_LATENCY, SMS_ATTEMPTS, SWEEP_RESENDS
from worker.celery_app import celery_app
from worker.outbox import SEND_BATCH_TASK, TASK_BATCH, batches
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
    """Send one notification (a retry, or a task published before batches): what became of
    it, e.g. "accepted", "retry" or "skipped"."""
    ids = _parse_ids([notification_id])
    return _send(ids).get(ids[0], "skipped") if ids else "skipped"


@celery_app.task(name=SEND_BATCH_TASK)
def send_batch(notification_ids: list[str]) -> dict[str, int]:
    """Send a batch of notifications side by side; how many came to each outcome (Flower
    shows it as the task's result). "skipped": sent already, not due, or no such id."""
    if not isinstance(notification_ids, list):
        log.error("a send batch needs a list of notification ids, not %r", notification_ids)
        return {"skipped": 1}
    ids = _parse_ids(notification_ids)
    outcomes = Counter(_send(ids).values())
    outcomes["skipped"] += len(notification_ids) - outcomes.total()
    return {outcome: count for outcome, count in outcomes.items() if count}


def _parse_ids(notification_ids: list[Any]) -> list[uuid.UUID]:
    """The notification ids among `notification_ids`, each once, in order; the rest logged."""
    ids: dict[uuid.UUID, None] = {}
    for notification_id in notification_ids:
        try:
            ids[uuid.UUID(notification_id)] = None
        except (ValueError, TypeError, AttributeError):
            log.warning("skipping a send task for %r: not a notification id", notification_id)
    return list(ids)


def _send(ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Claim, send once, record and settle the given notifications, TASK_BATCH at a time;
    what became of each that was ours to send."""
    outcomes: dict[uuid.UUID, str] = {}
    for batch in batches(ids):
        # Claimed a batch at a time: a lease covers one send, never a wait behind others.
        outcomes |= _send_claimed(batch)
    return outcomes


def _send_claimed(notification_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    settings = _settings()
    session = db.session
    claimed = claim(session, notification_ids=notification_ids, lease=LEASE)
    session.commit()  # the leases are ours before we touch the network, never during
    if not claimed:
        return {}
    sender = _sender()
    results = _side_by_side(lambda notification: _attempt(sender, notification, settings), claimed)
    sends = list(zip(claimed, results, strict=True))

    record_attempts(session, sends)
    accepted = [(n, result) for n, result in sends if result.outcome is Outcome.ACCEPTED]
    mark_sent_many(session, accepted)
    outcomes: dict[uuid.UUID, str] = {}
    retries: list[tuple[Notification, timedelta]] = []
    for notification, result in sends:
        outcomes[notification.id] = result.outcome.value
        if result.outcome is Outcome.ACCEPTED:
            continue
        if result.outcome in (Outcome.RETRY, Outcome.RETRY_OPERATOR) and (
            notification.attempts < settings.sms_max_attempts
        ):
            retry_in = backoff(notification.attempts, settings)
            mark_retry(session, notification, error=result.error or "", delay=retry_in)
            retries.append((notification, retry_in))
            outcomes[notification.id] = "retry"
        else:
            mark_failed(session, notification, error=result.error or "")
    session.commit()

    for notification, result in sends:
        SMS_ATTEMPTS.labels(result.outcome.value).inc()
        request_id_var.set(notification.request_id)
        if result.outcome in (Outcome.RETRY_OPERATOR, Outcome.BAD_CREDENTIALS):
            log.error("SMS %s needs an operator: %s", notification.id, result.error)
        elif result.outcome is not Outcome.ACCEPTED:
            log.warning(
                "SMS %s attempt %d failed: %s",
                notification.id,
                notification.attempts,
                result.error,
            )
    for notification, retry_in in retries:
        send_notification.apply_async((str(notification.id),), countdown=retry_in.total_seconds())
    return outcomes


def _attempt(sender: SmsSender, notification: Notification, settings: Settings) -> SendResult:
    """One send of a claimed notification (in a thread of its own when it has siblings). It
    never raises: what one message ran into must not cost its batch the others' outcomes."""
    request_id_var.set(notification.request_id)
    phone, refusal = sendable_phone(notification, settings.default_region, settings.allowed_regions)
    if phone is None:
        return SendResult(
            outcome=Outcome.PERMANENT,
            started_at=notification.updated_at,
            duration_ms=0,
            error=refusal,
        )
    started = datetime.now(UTC)
    try:
        result = sender.send(phone, notification.body)
    except Exception as error:  # a defect, or a failure the sender does not know
        log.exception("SMS %s: the send failed unexpectedly", notification.id)
        return SendResult(
            outcome=Outcome.RETRY,
            started_at=started,
            duration_ms=int((datetime.now(UTC) - started).total_seconds() * 1000),
            error=f"unexpected error in the worker: {type(error).__name__}",
        )
    GATEWAY_LATENCY.observe(result.duration_ms / 1000)
    return result


_local = threading.local()


def _side_by_side(send: Callable[[Notification], SendResult], notifications: list[Notification]):
    """`send` for each notification, all at the same time; the results in their order. Each
    pool thread of the worker keeps threads of its own for this, so a batch never waits behind
    another batch's sends while its leases run."""
    if len(notifications) == 1:
        return [send(notifications[0])]
    executor = getattr(_local, "executor", None)
    if executor is None:
        executor = _local.executor = ThreadPoolExecutor(
            max_workers=TASK_BATCH, thread_name_prefix="sms-send"
        )
    return list(executor.map(send, notifications))


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
    for batch in batches([str(notification_id) for notification_id in {*requeued, *due}]):
        send_batch.apply_async((batch,))
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
