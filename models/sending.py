"""The worker's side of a notification: claim it, settle each send as its reply arrives, and
take back the leases of workers that died.

A claim moves QUEUED -> SENDING with a lease and opens an attempt (no outcome yet) in the same
transaction, before the worker touches the network. The reply closes that attempt and moves
the row on, at once and on its own (or with replies that arrived at the same moment), so no
reply that reached the worker is ever lost with others'. A row is settled only by the claim
that made it (`claim` only grows). An attempt still open when its lease is taken back is closed
as interrupted: the gateway may have the message, and sending it again may make a duplicate,
the only kind the service can cause, each one on record.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    Boolean,
    Interval,
    any_,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Session

from models.customers import Customer
from models.delivery_reports import apply_early_reports
from models.notifications import (
    AttemptOutcome,
    Notification,
    NotificationAttempt,
    NotificationStatus,
)
from models.orders import Order
from models.validation import normalize_phone, sms_refusal

RAW_REPLY_LIMIT = 1024
# What is kept of why a try failed (an exception's text may be any length): clients read it
# in `lastError` and `history`, and the cost of a document weighs it by this size.
ERROR_LIMIT = 512
INTERRUPTED_ERROR = (
    "the worker stopped before the gateway's reply reached it; the SMS may have gone out"
)
RETRYABLE = (AttemptOutcome.RETRY, AttemptOutcome.RETRY_OPERATOR, AttemptOutcome.UNANSWERED)

# The customer's phone as it is now: what a message (re)queued is sent to.
CURRENT_PHONE = (
    select(Customer.phone)
    .join(Order, Order.customer_id == Customer.id)
    .where(Order.id == Notification.order_id)
    .scalar_subquery()
)


@dataclass(frozen=True)
class Claimed:
    """A notification this worker holds, and the attempt opened for its send."""

    notification: Notification
    attempt_id: int


class Reply(Protocol):
    """What one gateway call produced, as the worker's sender reports it."""

    started_at: datetime
    duration_ms: int
    http_status: int | None
    status_code: int | None
    status: str | None
    message_id: str | None
    cost: str | None
    error: str | None
    raw_reply: str | None


@dataclass(frozen=True)
class Settlement:
    """A claimed notification, the reply to its send, and what that reply means for it."""

    claimed: Claimed
    reply: Reply
    outcome: AttemptOutcome
    to: NotificationStatus  # SENT, QUEUED (again, after `retry_in`) or FAILED
    retry_in: timedelta | None = None
    # The gateway's message id is another notification's already (a unique key): the row is
    # SENT without it, and the attempt keeps it.
    message_id_taken: bool = False

    @property
    def row_message_id(self) -> str | None:
        return None if self.message_id_taken else self.reply.message_id

    @property
    def row_error(self) -> str | None:
        if not self.message_id_taken:
            return self.reply.error
        return f"the gateway's message id {self.reply.message_id} is another notification's"


def decide(
    claimed: Claimed,
    reply: Reply,
    outcome: AttemptOutcome,
    *,
    max_attempts: int,
    backoff: timedelta,
) -> Settlement:
    """What a reply means: accepted is SENT; a transient failure is QUEUED again after
    `backoff` while attempts remain; anything else, or the last attempt, is FAILED."""
    if outcome is AttemptOutcome.ACCEPTED:
        return Settlement(claimed, reply, outcome, NotificationStatus.SENT)
    if outcome in RETRYABLE and claimed.notification.attempts < max_attempts:
        return Settlement(claimed, reply, outcome, NotificationStatus.QUEUED, backoff)
    return Settlement(claimed, reply, outcome, NotificationStatus.FAILED)


_CLAIM = (
    select(Notification)
    .from_statement(
        update(Notification.__table__)
        .where(
            Notification.id == any_(bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))),
            Notification.status == NotificationStatus.QUEUED,
            Notification.next_attempt_at <= func.clock_timestamp() + timedelta(seconds=1),
        )
        .values(
            status=NotificationStatus.SENDING,
            attempts=Notification.attempts + 1,
            claim=Notification.claim + 1,
            lease_expires_at=func.clock_timestamp() + bindparam("lease", type_=Interval),
            updated_at=func.clock_timestamp(),
        )
        .returning(*Notification.__table__.columns)
    )
    .execution_options(populate_existing=True)
)
_OPEN_ATTEMPTS = (
    insert(NotificationAttempt.__table__)
    .values(started_at=func.clock_timestamp())
    .returning(NotificationAttempt.id, NotificationAttempt.notification_id)
)


def claim(
    session: Session, *, notification_ids: list[uuid.UUID], lease: timedelta
) -> list[Claimed]:
    """QUEUED and due -> SENDING with a lease, each with an attempt opened; the rows claimed,
    leaving out those someone else has or that are not due. Commit before sending."""
    rows = list(session.scalars(_CLAIM, {"ids": notification_ids, "lease": lease}))
    if not rows:
        return []
    opened = session.execute(
        _OPEN_ATTEMPTS,
        [{"notification_id": row.id, "claim": row.claim, "phone": row.phone} for row in rows],
    ).all()
    attempt_of = {notification_id: attempt_id for attempt_id, notification_id in opened}
    return [Claimed(row, attempt_of[row.id]) for row in rows]


def sendable_phone(
    notification: Notification, region: str, allowed: Collection[str]
) -> tuple[str | None, str | None]:
    """(the E.164 number to send to, None), or (None, why no SMS may go out). Asked right
    before each send: a row written before SMS_ALLOWED_REGIONS changed, or a phone stored by
    older code, must not reach the gateway."""
    phone = normalize_phone(notification.phone, region) if notification.phone else None
    if phone is None:
        return None, "the customer has no valid phone number"
    if refusal := sms_refusal(phone, allowed):
        return None, f"not sent: the phone is {refusal}"
    return phone, None


def _first_bytes(text: str | None, limit: int) -> str | None:
    """At most `limit` bytes of `text` in UTF-8, cut at a character boundary."""
    if text is None:
        return None
    return text.encode()[:limit].decode(errors="ignore")


# One round trip settles a group of replies: each closes its open attempt and moves its row
# where its reply says, only where the claim that sent it still holds the row, and tells
# whether a delivery report for its message is here already. A reply is not safe until
# this commits (a kill before it sends the message again), so it is one statement, not five.
_SETTLE = text(
    """
    WITH settled AS (
        SELECT * FROM unnest(
            CAST(:attempt_ids AS bigint[]), CAST(:ids AS uuid[]), CAST(:claims AS bigint[]),
            CAST(:outcomes AS text[]), CAST(:tos AS text[]), CAST(:started AS timestamptz[]),
            CAST(:durations AS integer[]), CAST(:http_statuses AS integer[]),
            CAST(:codes AS integer[]), CAST(:gateway_statuses AS text[]),
            CAST(:message_ids AS text[]), CAST(:row_message_ids AS text[]),
            CAST(:costs AS text[]), CAST(:errors AS text[]), CAST(:raw_replies AS text[]),
            CAST(:delays_ms AS integer[])
        ) AS s(attempt_id, id, claim, outcome, to_status, started_at, duration_ms, http_status,
               status_code, gateway_status, message_id, row_message_id, cost, error,
               raw_reply, delay_ms)
    ), closed AS (
        UPDATE notification_attempts AS a
        SET outcome = s.outcome, started_at = s.started_at, duration_ms = s.duration_ms,
            http_status = s.http_status, gateway_status_code = s.status_code,
            gateway_status = s.gateway_status, provider_message_id = s.message_id,
            error = s.error, raw_reply = s.raw_reply
        FROM settled AS s
        WHERE a.id = s.attempt_id AND a.outcome IS NULL
    ), moved AS (
        UPDATE notifications AS n
        SET status = s.to_status,
            provider_message_id = CASE WHEN s.to_status = 'SENT' THEN s.row_message_id
                                       ELSE n.provider_message_id END,
            cost = CASE WHEN s.to_status = 'SENT' THEN s.cost ELSE n.cost END,
            last_error = CASE WHEN s.to_status = 'SENT' THEN NULL ELSE s.error END,
            sent_at = CASE WHEN s.to_status = 'SENT' THEN clock_timestamp() ELSE n.sent_at END,
            next_attempt_at = CASE
                WHEN s.to_status = 'QUEUED'
                THEN clock_timestamp() + s.delay_ms * interval '1 millisecond'
                ELSE n.next_attempt_at END,
            -- queued again: to the customer's phone as it is now
            phone = CASE
                WHEN s.to_status = 'QUEUED'
                THEN (SELECT c.phone FROM orders AS o JOIN customers AS c ON c.id = o.customer_id
                      WHERE o.id = n.order_id)
                ELSE n.phone END,
            lease_expires_at = NULL,
            updated_at = clock_timestamp()
        FROM settled AS s
        WHERE n.id = s.id AND n.claim = s.claim AND n.status = 'SENDING'
        RETURNING n.id, n.status, n.provider_message_id
    )
    SELECT moved.id,
           moved.status = 'SENT' AND EXISTS (
               SELECT FROM delivery_reports AS r
               WHERE r.provider_message_id = moved.provider_message_id
           ) AS reported
    FROM moved
    """
).columns(id=UUID(as_uuid=True), reported=Boolean)


def settle(session: Session, settlements: list[Settlement]) -> set[uuid.UUID]:
    """Close each settlement's attempt with its reply and move its row where the reply says,
    in the caller's transaction; the ids that moved (a row another claim holds by now is
    left alone, its attempt still closed). Delivery reports that raced ahead of SENT are
    applied now."""
    if not settlements:
        return set()
    rows = session.execute(_SETTLE, _parameters(settlements)).all()
    moved = {row.id for row in rows}
    early = {row.id for row in rows if row.reported}
    if early:
        apply_early_reports(
            session,
            {
                s.row_message_id: s.claimed.notification.id
                for s in settlements
                if s.claimed.notification.id in early and s.row_message_id
            },
        )
    return moved


def _parameters(settlements: Iterable[Settlement]) -> dict[str, list[Any]]:
    rows = list(settlements)
    return {
        "attempt_ids": [s.claimed.attempt_id for s in rows],
        "ids": [s.claimed.notification.id for s in rows],
        "claims": [s.claimed.notification.claim for s in rows],
        "outcomes": [s.outcome.value for s in rows],
        "tos": [s.to.value for s in rows],
        "started": [s.reply.started_at for s in rows],
        "durations": [s.reply.duration_ms for s in rows],
        "http_statuses": [s.reply.http_status for s in rows],
        "codes": [s.reply.status_code for s in rows],
        "gateway_statuses": [s.reply.status for s in rows],
        "message_ids": [s.reply.message_id for s in rows],
        "row_message_ids": [s.row_message_id for s in rows],
        "costs": [s.reply.cost for s in rows],
        "errors": [_first_bytes(s.row_error, ERROR_LIMIT) for s in rows],
        "raw_replies": [_first_bytes(s.reply.raw_reply, RAW_REPLY_LIMIT) for s in rows],
        "delays_ms": [int(s.retry_in.total_seconds() * 1000) if s.retry_in else 0 for s in rows],
    }


# -- leases of workers that died -------------------------------------------------------------


@dataclass(frozen=True)
class TakenBack:
    """What the sweep took back from workers that stopped mid-send."""

    requeued: list[uuid.UUID]
    failed: int
    interrupted: int  # attempts closed as interrupted: SMS that may have gone out twice


def take_back_expired_leases(session: Session, *, limit: int, max_attempts: int) -> TakenBack:
    """SENDING rows whose lease expired (their worker died mid-send): the attempt each left
    open is closed as interrupted, and the row goes back to QUEUED, due now and to the
    customer's phone as it is now, or, its attempts used up, to FAILED.

    The gateway takes no idempotency key, so whether that send went out cannot be known: it is
    sent again (at least once) rather than risk a lost SMS, and the attempt says so."""
    expired = list(
        session.scalars(
            select(Notification.id)
            .where(
                Notification.status == NotificationStatus.SENDING,
                Notification.lease_expires_at < func.clock_timestamp(),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not expired:
        return TakenBack([], 0, 0)
    interrupted = session.execute(
        update(NotificationAttempt.__table__)
        .where(
            NotificationAttempt.notification_id.in_(expired),
            NotificationAttempt.outcome.is_(None),
        )
        .values(outcome=AttemptOutcome.INTERRUPTED, error=INTERRUPTED_ERROR)
    ).rowcount

    def move(condition: Any, **values: Any) -> list[uuid.UUID]:
        return list(
            session.scalars(
                update(Notification.__table__)
                .where(Notification.id.in_(expired), condition)
                .values(lease_expires_at=None, updated_at=func.clock_timestamp(), **values)
                .returning(Notification.id)
            )
        )

    failed = move(
        Notification.attempts >= max_attempts,
        status=NotificationStatus.FAILED,
        last_error="the worker stopped mid-send on the last attempt; giving up",
    )
    requeued = move(
        Notification.attempts < max_attempts,
        status=NotificationStatus.QUEUED,
        next_attempt_at=func.clock_timestamp(),
        phone=CURRENT_PHONE,
        last_error="the worker stopped mid-send (lease expired); sending again",
    )
    return TakenBack(requeued, len(failed), interrupted)


def due_for_sweep(session: Session, *, grace: timedelta, limit: int) -> list[uuid.UUID]:
    """QUEUED rows whose moment passed at least `grace` ago: their task was lost or never
    published (Redis was down)."""
    return list(
        session.scalars(
            select(Notification.id)
            .where(
                Notification.status == NotificationStatus.QUEUED,
                Notification.next_attempt_at <= func.clock_timestamp() - grace,
            )
            .order_by(Notification.next_attempt_at)
            .limit(limit)
        )
    )
