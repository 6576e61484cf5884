"""SMS notifications: the outbox row written with each order change, its attempts at the
gateway, and the admins' list of them.

State machine: QUEUED -> SENDING -> SENT -> DELIVERED, and any non-final state -> FAILED.
Every change is a conditional UPDATE, so a repeated task or callback changes nothing: the
worker's are in `models.sending`, the gateway's delivery reports in `models.delivery_reports`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, Session, column_property, mapped_column, relationship, undefer

from models.actors import Actor
from models.db import Timestamp, UUIDPrimaryKey, db
from models.pagination import Page, paginate
from models.validation import parse_choice

if TYPE_CHECKING:
    from models.orders import Order

OUTBOX_KEY = "outbox"  # session.info key: notification ids to publish once committed
MESSAGE_ID_LIMIT = 100  # the gateway's id for a message, as kept


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


class AttemptOutcome(StrEnum):
    """What became of one try at the gateway; none yet while its send is under way."""

    ACCEPTED = "accepted"  # the gateway took the message
    RETRY = "retry"  # may succeed later
    RETRY_OPERATOR = "retry_operator"  # may succeed once someone acts (balance, sender id)
    PERMANENT = "permanent"  # will never succeed as it is
    BAD_CREDENTIALS = "bad_credentials"  # our configuration is wrong
    # The worker stopped before the reply reached it (its lease was taken back): the gateway
    # may or may not have the message, so sending again may make a duplicate.
    INTERRUPTED = "interrupted"
    # Sent, and no reply in time or the reply cut off: tried again, as maybe not taken.
    UNANSWERED = "unanswered"


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
    # Tries toward SMS_MAX_ATTEMPTS (a resend starts again from 0).
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # Claims ever made on the row; only grows, so only the live claim can settle it.
    claim: Mapped[int] = mapped_column(BigInteger, server_default="0")
    next_attempt_at: Mapped[Timestamp]
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_message_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_LIMIT), unique=True)
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
    """One try at the gateway, kept forever: written when its send is claimed (no outcome
    yet), closed once when the reply arrives or when its lease is taken back."""

    __tablename__ = "notification_attempts"
    __table_args__ = (
        Index("ix_notification_attempts_notification", "notification_id", "id"),
        Index(
            "ix_notification_attempts_in_doubt",
            "notification_id",
            postgresql_where="outcome IN ('interrupted', 'unanswered')",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("notifications.id", ondelete="CASCADE")
    )
    claim: Mapped[int | None] = mapped_column(BigInteger)
    phone: Mapped[str | None] = mapped_column(String(20))
    outcome: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    gateway_status_code: Mapped[int | None] = mapped_column(Integer)
    gateway_status: Mapped[str | None] = mapped_column(String(64))
    provider_message_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_LIMIT))
    error: Mapped[str | None] = mapped_column(Text)
    raw_reply: Mapped[str | None] = mapped_column(Text)


# -- writing the outbox ---------------------------------------------------------------------


def publish_after_commit(session: Session, notification_id: uuid.UUID) -> None:
    """Hand the notification to the worker once this transaction has committed (the outbox
    relay publishes it then; a rollback forgets it)."""
    session.info.setdefault(OUTBOX_KEY, []).append(notification_id)


# -- reading and resending ------------------------------------------------------------------


# A notification with an attempt that was sent but never answered (the worker died, or the
# gateway did not reply in time) may have gone out more than once.
DOUBTFUL = (AttemptOutcome.INTERRUPTED, AttemptOutcome.UNANSWERED)
IN_DOUBT = (
    select(NotificationAttempt.id)
    .where(
        NotificationAttempt.notification_id == Notification.id,
        NotificationAttempt.outcome.in_(DOUBTFUL),
    )
    .exists()
)


# Read with the lists below, where `inDoubt` is asked of many rows at once; never loaded (nor
# needed) in the worker's statements.
Notification.in_doubt = column_property(IN_DOUBT, deferred=True)


def list_notifications(
    session: Session,
    *,
    actor: Actor,
    status: str | None = None,
    in_doubt: bool | None = None,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Page[Notification]:
    """Notifications newest first, optionally of one status, and only those that may have
    gone out more than once (`in_doubt`) or none of those (admins only)."""
    actor.require_admin("only an admin may list notifications")
    wanted = parse_choice(NotificationStatus, status)
    query = select(Notification).options(undefer(Notification.in_doubt))
    if in_doubt is not None:
        query = query.where(IN_DOUBT if in_doubt else ~IN_DOUBT)
    if wanted is not None:
        query = query.where(Notification.status == wanted)
    return paginate(
        session,
        query,
        created_at=Notification.created_at,
        row_id=Notification.id,
        first=first,
        after=after,
        last=last,
        before=before,
    )
