"""Delivery reports from the gateway: each stored exactly as it came, matched or not, and
applied to its notification. A final status never changes again, so a repeated report
changes nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, func, select, update
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db import Timestamp, db
from models.notifications import Notification, NotificationStatus

REPORT_DELIVERED = {"Success"}
REPORT_FAILED = {"Failed", "Rejected", "AbsentSubscriber", "Expired"}


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


def _move(
    session: Session,
    notification_id: uuid.UUID,
    from_: tuple[str, ...],
    **values: Any,
) -> bool:
    # The table, not the entity: no ORM bookkeeping for rows this session does not hold.
    statement = update(Notification.__table__).where(
        Notification.id == notification_id, Notification.status.in_(from_)
    )
    result = session.execute(statement.values(updated_at=func.clock_timestamp(), **values))
    return result.rowcount == 1  # type: ignore[attr-defined]


def apply_report(session: Session, notification_id: uuid.UUID, report: DeliveryReport) -> None:
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
        apply_report(session, notification.id, report)
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
        apply_report(session, notification_id, report)
    return len(rows)


def apply_early_reports(session: Session, notification_of: dict[str, uuid.UUID]) -> None:
    """Apply the reports that arrived for these message ids (of notifications just marked
    SENT) before SENT was recorded."""
    if not notification_of:
        return
    early = session.scalars(
        select(DeliveryReport)
        .where(DeliveryReport.provider_message_id.in_(list(notification_of)))
        .order_by(DeliveryReport.id)
    ).all()
    for report in early:
        report.notification_id = notification_of[report.provider_message_id]
        apply_report(session, report.notification_id, report)
