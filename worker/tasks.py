"""Celery tasks: send notifications (a batch side by side, or one), and the periodic sweep.
Thin: the rules for each state change live in `models.sending`, the gateway's codes in
`worker.senders`. Each send is settled as its reply arrives (see `models.sending`)."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import shared_task
from flask import current_app
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from common.logs import request_id_var
from common.metrics import GATEWAY_LATENCY, SMS_ATTEMPTS, SMS_IN_DOUBT, SWEEP_RESENDS
from common.settings import Settings
from models.db import db
from models.delivery_reports import match_late_reports
from models.idempotency import purge_expired_idempotency_keys
from models.notifications import AttemptOutcome, Notification, NotificationStatus
from models.outbox import SEND_BATCH_TASK, TASK_BATCH, batches
from models.sending import (
    RETRYABLE,
    Claimed,
    Settlement,
    claim,
    decide,
    due_for_sweep,
    sendable_phone,
    settle,
    take_back_expired_leases,
)
from worker.senders import Outcome, SendResult, SmsSender, build_sender

log = logging.getLogger(__name__)

SWEEP_BATCH = 500
# Waits between tries at recording replies while the database is away (a failover, a killed
# connection, a pool timeout): about 15 s in all, and never past the lease.
RECORD_PAUSES = (0.1, 0.3, 1.0, 2.0, 4.0, 8.0)
UNRECORDABLE = (DBAPIError, PoolTimeout)


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


@shared_task(name="notifications.send")
def send_notification(notification_id: str) -> str:
    """Send one notification (a retry, or a task published before batches): what became of
    it, e.g. "accepted", "retry" or "skipped"."""
    ids = _parse_ids([notification_id])
    return _send(ids).get(ids[0], "skipped") if ids else "skipped"


@shared_task(name=SEND_BATCH_TASK)
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
    """Claim, send once and settle the given notifications, TASK_BATCH at a time; what became
    of each that was ours to send."""
    outcomes: dict[uuid.UUID, str] = {}
    for batch in batches(ids):
        # Claimed a batch at a time: a lease covers one send, never a wait behind others.
        outcomes |= _send_claimed(batch)
    return outcomes


def _send_claimed(notification_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    settings = _settings()
    lease = timedelta(seconds=settings.sms_lease_seconds)
    claimed = _claim(notification_ids, lease)
    if not claimed:
        return {}
    # Recording must end before the lease does, or the row would be sent again meanwhile.
    record_by = time.monotonic() + lease.total_seconds() - settings.sms_timeout - 4
    sender = _sender()
    outcomes: dict[uuid.UUID, str] = {}
    for replies in _as_they_arrive(lambda c: _attempt(sender, c.notification, settings), claimed):
        settlements = [
            decide(
                held,
                reply,
                AttemptOutcome(reply.outcome.value),
                max_attempts=settings.sms_max_attempts,
                backoff=backoff(held.notification.attempts, settings),
            )
            for held, reply in replies
        ]
        moved = _record(settlements, record_by)
        outcomes |= _report(settlements, moved)
    return outcomes


def _claim(notification_ids: list[uuid.UUID], lease: timedelta) -> list[Claimed]:
    """Claim the rows and commit, before any send starts: the leases and open attempts are on
    record first. A database that went away is tried again a few times; then the rows stay
    QUEUED, and the sweep publishes them again."""
    session = db.session
    for pause in (*RECORD_PAUSES[:3], None):
        try:
            claimed = claim(session, notification_ids=notification_ids, lease=lease)
            session.commit()
            # Held apart from the session from here on: a rollback while recording (a killed
            # connection) expires what the session holds, and reading it again would query a
            # database that is away, outside any retry, and drop the task's other replies.
            for held in claimed:
                session.expunge(held.notification)
            return claimed
        except UNRECORDABLE as error:
            session.rollback()
            if pause is None:
                log.error(
                    "could not claim %d SMS (%s); the sweep will send them",
                    len(notification_ids),
                    type(error).__name__,
                )
                return []
            time.sleep(pause)
    return []  # pragma: no cover - the loop returns


def _record(settlements: list[Settlement], record_by: float) -> set[uuid.UUID]:
    """Settle these replies in one transaction; the ids that moved. A clash of one row's
    unique key settles each on its own; a database that went away is tried again, until the
    lease would run out (then the leases expire, the attempts read interrupted, and the SMS go
    out again: never lost)."""
    session = db.session
    for pause in (*RECORD_PAUSES, None):
        try:
            moved = settle(session, settlements)
            session.commit()
            return moved
        except IntegrityError:
            session.rollback()
            return _record_each(settlements)
        except UNRECORDABLE as error:
            session.rollback()
            if pause is None or time.monotonic() + pause > record_by:
                log.error(
                    "could not record the replies of %d SMS (%s); they will be sent again "
                    "when their leases expire",
                    len(settlements),
                    type(error).__name__,
                )
                return set()
            log.warning(
                "could not record the replies of %d SMS (%s); trying again in %.1f s",
                len(settlements),
                type(error).__name__,
                pause,
            )
            time.sleep(pause)
    return set()  # pragma: no cover - the loop returns


def _record_each(settlements: list[Settlement]) -> set[uuid.UUID]:
    """One at a time, so one row's clash costs no other its reply; a gateway message id that
    another notification holds already is kept in the attempt only."""
    session = db.session
    moved: set[uuid.UUID] = set()
    for settlement in settlements:
        for candidate in (settlement, _without_message_id(settlement)):
            try:
                moved |= settle(session, [candidate])
                session.commit()
                break
            except IntegrityError as error:
                session.rollback()
                log.error(
                    "SMS %s: recording its reply clashed: %s",
                    settlement.claimed.notification.id,
                    error.orig,
                )
    return moved


def _without_message_id(settlement: Settlement) -> Settlement:
    return Settlement(
        settlement.claimed,
        settlement.reply,
        settlement.outcome,
        settlement.to,
        settlement.retry_in,
        message_id_taken=True,
    )


def _report(settlements: list[Settlement], moved: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Count, log and (for retries) schedule what was recorded; each settlement's outcome."""
    outcomes: dict[uuid.UUID, str] = {}
    for settlement in settlements:
        notification = settlement.claimed.notification
        request_id_var.set(notification.request_id)
        SMS_ATTEMPTS.labels(settlement.outcome.value).inc()
        error = settlement.row_error
        if notification.id not in moved:
            # Recorded too late (a new claim holds the row) or not at all: its lease decides.
            outcomes[notification.id] = "unrecorded"
            continue
        if settlement.outcome is AttemptOutcome.UNANSWERED:
            SMS_IN_DOUBT.inc()  # the gateway may have it: a retry may make a second copy
        if settlement.to is NotificationStatus.SENT:
            outcomes[notification.id] = "accepted"
            continue
        if settlement.to is NotificationStatus.QUEUED:
            outcomes[notification.id] = "retry"
            if settlement.outcome is AttemptOutcome.RETRY_OPERATOR:
                log.error("SMS %s needs an operator: %s", notification.id, error)
            else:
                log.warning(
                    "SMS %s attempt %d failed, trying again: %s",
                    notification.id,
                    notification.attempts,
                    error,
                )
            assert settlement.retry_in is not None
            send_notification.apply_async(
                (str(notification.id),), countdown=settlement.retry_in.total_seconds()
            )
        elif settlement.outcome in RETRYABLE:
            outcomes[notification.id] = "failed"
            log.error(
                "SMS %s failed after %d attempts: %s", notification.id, notification.attempts, error
            )
        else:
            outcomes[notification.id] = settlement.outcome.value
            if settlement.outcome is AttemptOutcome.BAD_CREDENTIALS:
                log.error("SMS %s needs an operator: %s", notification.id, error)
            else:
                log.warning("SMS %s failed: %s", notification.id, error)
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


def _as_they_arrive(
    send: Callable[[Claimed], SendResult], claimed: list[Claimed]
) -> Iterator[list[tuple[Claimed, SendResult]]]:
    """`send` for each claimed notification, all at the same time; the replies as they
    arrive, those that arrived together in one list. Each pool thread of the worker keeps
    threads of its own for this, so a batch never waits behind another batch's sends."""
    if len(claimed) == 1:
        yield [(claimed[0], send(claimed[0]))]
        return
    executor = getattr(_local, "executor", None)
    if executor is None:
        executor = _local.executor = ThreadPoolExecutor(
            max_workers=TASK_BATCH, thread_name_prefix="sms-send"
        )
    futures = {executor.submit(send, held): held for held in claimed}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield [(futures[future], future.result()) for future in done]


@shared_task(name="notifications.sweep")
def sweep() -> dict[str, int]:
    """Every 30 s: take back leases of dead workers, re-publish overdue QUEUED rows, and
    forget idempotency keys older than a day."""
    session = db.session
    taken = take_back_expired_leases(
        session, limit=SWEEP_BATCH, max_attempts=_settings().sms_max_attempts
    )
    session.commit()
    requeued = taken.requeued
    if taken.interrupted:
        SMS_IN_DOUBT.inc(taken.interrupted)
        log.warning(
            "%d SMS may have gone out twice: their worker stopped before the gateway's reply "
            "reached it (notifications(inDoubt: true) lists them)",
            taken.interrupted,
        )
    if taken.failed:
        log.error("%d SMS failed: their worker stopped mid-send on the last attempt", taken.failed)
    if requeued:
        SWEEP_RESENDS.labels("lease_expired").inc(len(requeued))
        log.warning("re-sending %d SMS whose worker stopped mid-send", len(requeued))
    grace = timedelta(seconds=_settings().sms_sweep_grace_seconds)
    due = due_for_sweep(session, grace=grace, limit=SWEEP_BATCH)
    session.commit()
    SWEEP_RESENDS.labels("overdue").inc(len(due))
    for batch in batches([str(notification_id) for notification_id in {*requeued, *due}]):
        send_batch.apply_async((batch,))
    matched = match_late_reports(session, within=timedelta(hours=1), limit=SWEEP_BATCH)
    purged = purge_expired_idempotency_keys(session)
    session.commit()
    return {
        "lease_expired": len(requeued),
        "in_doubt": taken.interrupted,
        "gave_up": taken.failed,
        "republished": len(due),
        "late_reports": matched,
        "keys_purged": purged,
    }
