"""SMS notifications: the outbox row written with each order change, its attempts, and the
delivery reports the gateway posts back.

State machine: QUEUED -> SENDING -> SENT -> DELIVERED, and any non-final state -> FAILED.
Every change is a conditional UPDATE, so a repeated task or callback changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Interval,
    String,
    Text,
    UniqueConstraint,
    any_,
    bindparam,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.actors import Actor
from models.db import Timestamp, UUIDPrimaryKey, db
from models.errors import DomainError, ErrorCode
from models.pagination import Page, paginate
from models.validation import normalize_phone, parse_uuid, sms_refusal

if TYPE_CHECKING:
    from models.orders import Order

RAW_REPLY_LIMIT = 1024
OUTBOX_KEY = "outbox"  # session.info key: notification ids to publish once committed
SMS_LIMIT = 160


class NotificationKind(StrEnum):
    ORDER_PLACED = "ORDER_PLACED"
    ORDER_CONFIRMED = "ORDER_CONFIRMED"
    ORDER_CANCELLED = "ORDER_CANCELLED"


class NotificationStatus(StrEnum):
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


FINAL = (NotificationStatus.DELIVERED, NotificationStatus.FAILED)


class Notification(db.Model):
    __tablename__ = "notifications"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy reads a dict
    __table_args__ = (
        UniqueConstraint("order_id", "kind"),
        CheckConstraint(
            "status IN ('QUEUED', 'SENDING', 'SENT', 'DELIVERED', 'FAILED')", name="status"
        ),
        CheckConstraint(
            "kind IN ('ORDER_PLACED', 'ORDER_CONFIRMED', 'ORDER_CANCELLED')", name="kind"
        ),
        # The sweep's two questions: which QUEUED rows are due, which leases have expired.
        Index(
            "ix_notifications_queued_due",
            "next_attempt_at",
            postgresql_where="status = 'QUEUED'",
        ),
        Index(
            "ix_notifications_sending_lease",
            "lease_expires_at",
            postgresql_where="status = 'SENDING'",
        ),
        Index("ix_notifications_status_recent", "status", "created_at", "id"),
        Index("ix_notifications_recent", "created_at", "id"),
    )

    id: Mapped[UUIDPrimaryKey]
    order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32))
    phone: Mapped[str | None] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default=NotificationStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[Timestamp]
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_message_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    cost: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Declared so the unit of work inserts the order before its notifications.
    order: Mapped[Order] = relationship(lazy="raise_on_sql")


class NotificationAttempt(db.Model):
    """One try at the gateway, kept forever: what we sent, what came back, how long it took."""

    __tablename__ = "notification_attempts"
    __table_args__ = (Index("ix_notification_attempts_notification", "notification_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("notifications.id", ondelete="CASCADE")
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    gateway_status_code: Mapped[int | None] = mapped_column(Integer)
    gateway_status: Mapped[str | None] = mapped_column(String(64))
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    raw_reply: Mapped[str | None] = mapped_column(Text)


class DeliveryReport(db.Model):
    """A delivery report exactly as the gateway posted it, matched or not."""

    __tablename__ = "delivery_reports"
    __table_args__ = (
        Index("ix_delivery_reports_message", "provider_message_id"),
        Index(
            "ix_delivery_reports_unmatched",
            "received_at",
            postgresql_where="notification_id IS NULL",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("notifications.id", ondelete="SET NULL")
    )
    provider_message_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(String(100))
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[Timestamp]


# -- writing the outbox ---------------------------------------------------------------------


def short_reference(order_id: uuid.UUID) -> str:
    """The order reference a customer sees in an SMS: the first 8 hex digits of its id."""
    return order_id.hex[:8].upper()


# GSM 03.38: a message of these characters fits 160 to an SMS; any other character makes it
# UCS-2, 70 to an SMS. The extension characters count twice.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€")
# Curly quotes, dashes and ellipses, as phones and word processors type them, in GSM-7.
TYPOGRAPHY = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
    }
)


GSM7 = GSM7_BASIC | GSM7_EXTENSION


def sms_length(text: str) -> tuple[int, int]:
    """(characters as the network counts them, how many fit one SMS) for `text`."""
    if GSM7.issuperset(text):
        return len(text) + sum(map(text.count, GSM7_EXTENSION)), SMS_LIMIT
    return len(text), 70


def message_body(
    kind: NotificationKind, *, company: str, order_id: uuid.UUID, total: Decimal, currency: str
) -> str:
    """The SMS text: company, a short order reference and the total, within one SMS."""
    reference = short_reference(order_id)
    amount = f"{currency} {total:,.2f}"
    text = {
        NotificationKind.ORDER_PLACED: f"{company}: order {reference} for {amount} received. "
        "We will confirm it shortly.",
        NotificationKind.ORDER_CONFIRMED: f"{company}: order {reference} for {amount} is "
        "confirmed. Thank you!",
        NotificationKind.ORDER_CANCELLED: f"{company}: order {reference} for {amount} has "
        "been cancelled.",
    }[kind].translate(TYPOGRAPHY)
    length, fits = sms_length(text)
    if length > fits:  # a long or non-GSM company name: keep what matters
        text = f"Order {reference} ({amount}): {kind.removeprefix('ORDER_').lower()}."
    return text


def publish_after_commit(session: Session, notification_id: uuid.UUID) -> None:
    """Hand the notification to the worker once this transaction has committed (the outbox
    relay publishes it then; a rollback forgets it)."""
    session.info.setdefault(OUTBOX_KEY, []).append(notification_id)


# -- the worker's side ----------------------------------------------------------------------


# The worker's statements run once per batch of SMS; built once, only their parameters change.
_CLAIM = (
    select(Notification)
    .from_statement(
        update(Notification.__table__)
        .where(
            Notification.id == any_(bindparam("notification_ids", type_=ARRAY(UUID(as_uuid=True)))),
            Notification.status == NotificationStatus.QUEUED,
            Notification.next_attempt_at <= func.clock_timestamp() + timedelta(seconds=1),
        )
        .values(
            status=NotificationStatus.SENDING,
            attempts=Notification.attempts + 1,
            lease_expires_at=func.clock_timestamp() + bindparam("lease", type_=Interval),
            updated_at=func.clock_timestamp(),
        )
        .returning(*Notification.__table__.columns)
    )
    .execution_options(populate_existing=True, writes=True)
)


def claim(
    session: Session, *, notification_ids: list[uuid.UUID], lease: timedelta
) -> list[Notification]:
    """QUEUED and due -> SENDING with a lease, in one statement; returns the rows claimed,
    leaving out those someone else has or that are not due."""
    return list(session.scalars(_CLAIM, {"notification_ids": notification_ids, "lease": lease}))


class GatewayResult(Protocol):
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


_RECORD_ATTEMPT = insert(NotificationAttempt.__table__)


def record_attempts(session: Session, sends: list[tuple[Notification, GatewayResult]]) -> None:
    """Append one attempt per send; the attempts table is never updated or pruned. Written at
    once (one pipelined INSERT, no unit of work): nothing reads it back in the worker."""
    if not sends:
        return
    session.execute(
        _RECORD_ATTEMPT,
        [
            {
                "notification_id": notification.id,
                "started_at": result.started_at,
                "duration_ms": result.duration_ms,
                "http_status": result.http_status,
                "gateway_status_code": result.status_code,
                "gateway_status": result.status,
                "provider_message_id": result.message_id,
                "error": result.error,
                "raw_reply": _first_bytes(result.raw_reply, RAW_REPLY_LIMIT),
            }
            for notification, result in sends
        ],
    )


def _first_bytes(text: str | None, limit: int) -> str | None:
    """At most `limit` bytes of `text` in UTF-8, cut at a character boundary."""
    if text is None:
        return None
    return text.encode()[:limit].decode(errors="ignore")


def _move(
    session: Session,
    notification_id: uuid.UUID,
    from_: tuple[str, ...],
    claimed: int | None = None,
    **values: Any,
) -> bool:
    # The table, not the entity: no ORM bookkeeping for rows this session does not hold.
    statement = update(Notification.__table__).where(
        Notification.id == notification_id, Notification.status.in_(from_)
    )
    if claimed is not None:
        # Only the claim that made this attempt may settle it: after an expired lease the
        # sweep may have handed the row to another worker (whose claim counted one more).
        statement = statement.where(Notification.attempts == claimed)
    result = session.execute(statement.values(updated_at=func.clock_timestamp(), **values))
    return result.rowcount == 1  # type: ignore[attr-defined]


# One statement marks a whole batch SENT, each row only if the claim that made its attempt
# still holds it, and tells for each whether a delivery report for its message is already
# here, so the common case (none) costs no second query.
_ACCEPTED = (
    func.unnest(
        bindparam("notification_ids", type_=ARRAY(UUID(as_uuid=True))),
        bindparam("claimed", type_=ARRAY(Integer)),
        bindparam("message_ids", type_=ARRAY(String)),
        bindparam("costs", type_=ARRAY(String)),
    )
    .table_valued("id", "claimed", "message_id", "cost")
    .render_derived("accepted")
)
_MARK_SENT = (
    update(Notification.__table__)
    .where(
        Notification.id == _ACCEPTED.c.id,
        Notification.status.in_((NotificationStatus.SENDING, NotificationStatus.QUEUED)),
        Notification.attempts == _ACCEPTED.c.claimed,
    )
    .values(
        status=NotificationStatus.SENT,
        provider_message_id=_ACCEPTED.c.message_id,
        cost=_ACCEPTED.c.cost,
        last_error=None,
        lease_expires_at=None,
        sent_at=func.clock_timestamp(),
        updated_at=func.clock_timestamp(),
    )
    .returning(
        Notification.id,
        _ACCEPTED.c.message_id,
        exists().where(
            DeliveryReport.provider_message_id == func.nullif(_ACCEPTED.c.message_id, "")
        ),
    )
)


def mark_sent_many(
    session: Session, accepted: list[tuple[Notification, GatewayResult]]
) -> set[uuid.UUID]:
    """The gateway took these messages: SENT. Reports that raced ahead of us are applied now.
    Returns the ids that moved (a row another claim holds by now is left alone)."""
    if not accepted:
        return set()
    moved = session.execute(
        _MARK_SENT,
        {
            "notification_ids": [notification.id for notification, _ in accepted],
            "claimed": [notification.attempts for notification, _ in accepted],
            "message_ids": [result.message_id for _, result in accepted],
            "costs": [result.cost for _, result in accepted],
        },
    ).all()
    for notification_id, message_id, reported in moved:
        if reported:
            early = session.scalars(
                select(DeliveryReport)
                .where(DeliveryReport.provider_message_id == message_id)
                .order_by(DeliveryReport.id)
            ).all()
            for report in early:
                report.notification_id = notification_id
                _apply_report(session, notification_id, report)
    return {notification_id for notification_id, _, _ in moved}


def mark_retry(session: Session, notification: Notification, *, error: str, delay: timedelta):
    """A transient failure: back to QUEUED, due again after `delay`."""
    return _move(
        session,
        notification.id,
        (NotificationStatus.SENDING,),
        claimed=notification.attempts,
        status=NotificationStatus.QUEUED,
        last_error=error,
        lease_expires_at=None,
        next_attempt_at=func.clock_timestamp() + delay,
    )


def mark_failed(session: Session, notification: Notification, *, error: str) -> bool:
    """A permanent failure, or retries exhausted: FAILED, never retried by itself."""
    return _move(
        session,
        notification.id,
        (NotificationStatus.SENDING, NotificationStatus.QUEUED),
        claimed=notification.attempts,
        status=NotificationStatus.FAILED,
        last_error=error,
        lease_expires_at=None,
    )


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


def requeue_expired_leases(
    session: Session, *, limit: int, max_attempts: int
) -> tuple[list[uuid.UUID], int]:
    """SENDING rows whose worker died mid-send go back to QUEUED, due now; those that have
    used up their attempts fail instead. Returns (ids queued again, how many failed).

    The gateway takes no idempotency key, so we cannot know whether that send went out:
    we send again (at least once) rather than risk a lost SMS; the caller counts these.
    """

    def expired(*conditions: Any) -> Any:
        return (
            select(Notification.id)
            .where(
                Notification.status == NotificationStatus.SENDING,
                Notification.lease_expires_at < func.clock_timestamp(),
                *conditions,
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )

    def settle(ids: Any, **values: Any) -> list[uuid.UUID]:
        return list(
            session.scalars(
                update(Notification)
                .where(Notification.id.in_(ids), Notification.status == NotificationStatus.SENDING)
                .values(lease_expires_at=None, updated_at=func.clock_timestamp(), **values)
                .returning(Notification.id)
                .execution_options(synchronize_session=False)
            )
        )

    failed = settle(
        expired(Notification.attempts >= max_attempts),
        status=NotificationStatus.FAILED,
        last_error="the worker stopped mid-send on every attempt; giving up",
    )
    requeued = settle(
        expired(Notification.attempts < max_attempts),
        status=NotificationStatus.QUEUED,
        next_attempt_at=func.clock_timestamp(),
        last_error="the worker stopped mid-send (lease expired); sending again",
    )
    return requeued, len(failed)


# -- delivery reports -----------------------------------------------------------------------

REPORT_DELIVERED = {"Success"}
REPORT_FAILED = {"Failed", "Rejected", "AbsentSubscriber", "Expired"}


def _apply_report(session: Session, notification_id: uuid.UUID, report: DeliveryReport) -> None:
    if report.status in REPORT_DELIVERED:
        _move(
            session,
            notification_id,
            (NotificationStatus.SENT,),
            status=NotificationStatus.DELIVERED,
            delivered_at=func.clock_timestamp(),
        )
    elif report.status in REPORT_FAILED:
        _move(
            session,
            notification_id,
            (NotificationStatus.SENT,),
            status=NotificationStatus.FAILED,
            last_error=f"delivery failed: {report.failure_reason or report.status}",
        )
    # Sent, Submitted, Buffered and anything new: still on its way, SENT stays.


def record_delivery_report(session: Session, *, form: dict[str, str]) -> Notification | None:
    """Store a delivery report and apply it; returns the notification, None for an unknown id.

    A final status never changes again, so a repeated report changes nothing.
    """
    message_id = (form.get("id") or "").strip()[:100]
    status = (form.get("status") or "").strip()[:32]
    notification = session.scalars(
        select(Notification).where(Notification.provider_message_id == message_id)
    ).first()
    report = DeliveryReport(
        notification_id=notification.id if notification else None,
        provider_message_id=message_id,
        status=status,
        failure_reason=(form.get("failureReason") or "")[:100] or None,
        raw=dict(form),
    )
    session.add(report)
    session.flush()
    if notification is not None:
        _apply_report(session, notification.id, report)
    return notification


def match_late_reports(session: Session, *, within: timedelta, limit: int) -> int:
    """Apply reports stored as unknown because they raced ahead of the worker recording SENT
    (each side committed before it could see the other); returns how many matched."""
    rows = session.execute(
        select(DeliveryReport, Notification.id)
        .join(Notification, Notification.provider_message_id == DeliveryReport.provider_message_id)
        .where(
            DeliveryReport.notification_id.is_(None),
            DeliveryReport.received_at > func.clock_timestamp() - within,
        )
        .order_by(DeliveryReport.id)
        .limit(limit)
    ).all()
    for report, notification_id in rows:
        report.notification_id = notification_id
        _apply_report(session, notification_id, report)
    return len(rows)


# -- reading and resending ------------------------------------------------------------------


def notifications_of_order(session: Session, *, actor: Actor, order: Any) -> list[Notification]:
    """An order's notifications, oldest first, if the actor may see the order."""
    if not (actor.is_admin or order.customer_id == actor.customer_id):
        return []
    return list(
        session.scalars(
            select(Notification)
            .where(Notification.order_id == order.id)
            .order_by(Notification.created_at)
        )
    )


def list_notifications(
    session: Session,
    *,
    actor: Actor,
    status: str | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Page[Notification]:
    """Notifications newest first, optionally of one status (admins only)."""
    if not actor.is_admin:
        raise DomainError.single(None, ErrorCode.FORBIDDEN, "only an admin may list notifications")
    query = select(Notification)
    if status:
        try:
            query = query.where(Notification.status == NotificationStatus(status.strip().upper()))
        except ValueError:
            names = ", ".join(NotificationStatus)
            raise DomainError.single(
                "status", ErrorCode.INVALID, f"status must be one of {names}"
            ) from None
    return paginate(
        session,
        query,
        created_at=Notification.created_at,
        row_id=Notification.id,
        first=first,
        after=after,
    )


def resend(session: Session, *, actor: Actor, notification_id: object) -> Notification:
    """A FAILED notification back to QUEUED with a fresh attempt budget (admins only)."""
    if not actor.is_admin:
        raise DomainError.single(None, ErrorCode.FORBIDDEN, "only an admin may resend")
    key = parse_uuid(notification_id)
    if key is None:
        raise DomainError.single("id", ErrorCode.INVALID, "id is not a valid notification id")
    notification = session.scalars(
        update(Notification)
        .where(Notification.id == key, Notification.status == NotificationStatus.FAILED)
        .values(
            status=NotificationStatus.QUEUED,
            attempts=0,
            next_attempt_at=func.clock_timestamp(),
            provider_message_id=None,
            updated_at=func.clock_timestamp(),
        )
        .returning(Notification)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if notification is None:
        current = session.get(Notification, key)
        if current is None:
            raise DomainError.single("id", ErrorCode.NOT_FOUND, "notification not found")
        raise DomainError.single(
            "id", ErrorCode.INVALID_STATE, f"notification is {current.status}; only FAILED resends"
        )
    publish_after_commit(session, notification.id)
    return notification
