"""Idempotency keys of createOrder: a repeat of the same request within 24 hours returns the
first order and creates nothing. A key is claimed by `models.placing.PLACE_ORDER`, in the
statement that places its order."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

from sqlalchemy import ForeignKey, Index, String, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db import Timestamp, db
from models.errors import DomainError, ErrorCode, ErrorCollector
from models.validation import storable

IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255


class IdempotencyKey(db.Model):
    """A createOrder key, scoped to the caller, remembered for 24 hours."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_IDEMPOTENCY_KEY), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="CASCADE")
    )
    created_at: Mapped[Timestamp]


def check_key(errors: ErrorCollector, field: str, key: str | None) -> None:
    """Note what is wrong with a client's idempotency key, if anything (None is no key)."""
    if key is None:
        return
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        errors.add(field, ErrorCode.INVALID, f"{field} must be 1 to 255 characters")
    elif not storable(key):
        errors.add(
            field, ErrorCode.INVALID, f"{field} must be valid Unicode text without NUL characters"
        )


def fingerprint(request: list[object]) -> str:
    """What identifies a request (JSON values), to tell its repeat from another request made
    under the same key."""
    return hashlib.sha256(json.dumps(request, separators=(",", ":")).encode()).hexdigest()


def earlier_order_id(session: Session, *, subject: str, key: str, request: str) -> uuid.UUID:
    """The order placed under a key someone already claimed, if it was for the same request
    (`request`: its fingerprint); IDEMPOTENCY_KEY_REUSED otherwise."""
    earlier = session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.subject == subject, IdempotencyKey.key == key)
    ).one()
    if earlier.request_hash != request or earlier.order_id is None:
        raise DomainError.single(
            "idempotencyKey",
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this idempotencyKey was used for a different order",
        )
    return earlier.order_id


def purge_expired_idempotency_keys(session: Session, *, limit: int = 5000) -> int:
    """Forget idempotency keys older than 24 hours; returns how many went."""
    expired = (
        select(IdempotencyKey.subject, IdempotencyKey.key)
        .where(IdempotencyKey.created_at < func.now() - IDEMPOTENCY_TTL)
        .limit(limit)
    )
    result = session.execute(
        delete(IdempotencyKey).where(
            tuple_(IdempotencyKey.subject, IdempotencyKey.key).in_(expired)
        )
    )
    return result.rowcount  # type: ignore[attr-defined]
