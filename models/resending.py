"""Sending a notification again by hand: the runbook's last step, once the phone is right."""

from __future__ import annotations

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from models.actors import Actor
from models.errors import DomainError, ErrorCode
from models.notifications import Notification, NotificationStatus, publish_after_commit
from models.sending import CURRENT_PHONE
from models.validation import parse_uuid


def resend(session: Session, *, actor: Actor, notification_id: object) -> Notification:
    """A FAILED notification back to QUEUED with a fresh attempt budget, to the customer's
    phone as it is now (admins only): the runbook is to correct the phone, then resend."""
    actor.require_admin("only an admin may resend")
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
            phone=CURRENT_PHONE,
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
