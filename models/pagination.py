"""Keyset pagination: newest first, with opaque cursors and a hard cap on page size."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from models.errors import DomainError, ErrorCode

DEFAULT_PAGE = 20
MAX_PAGE = 100

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows plus what a client needs to ask for the next one."""

    items: Sequence[T]
    has_next_page: bool
    end_cursor: str | None


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """An opaque cursor naming a row's position in newest-first order."""
    raw = json.dumps([created_at.isoformat(), str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position inside a cursor; a DomainError (INVALID) if it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise DomainError.single(
            "after", ErrorCode.INVALID, "after is not a valid cursor"
        ) from None


def page_size(first: int | None) -> int:
    """`first` checked against the cap; a DomainError (INVALID) outside 1..MAX_PAGE."""
    if first is None:
        return DEFAULT_PAGE
    if not 1 <= first <= MAX_PAGE:
        raise DomainError.single("first", ErrorCode.INVALID, f"first must be 1 to {MAX_PAGE}")
    return first


def paginate(
    session: Session,
    query: Select[Any],
    *,
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[uuid.UUID],
    first: int | None,
    after: str | None,
) -> Page[Any]:
    """Run `query` newest first from after `after`, fetching one extra row to see if more exist."""
    size = page_size(first)
    if after:
        at, after_id = decode_cursor(after)
        query = query.where(or_(created_at < at, and_(created_at == at, row_id < after_id)))
    rows = session.scalars(query.order_by(created_at.desc(), row_id.desc()).limit(size + 1)).all()
    items = rows[:size]
    end = encode_cursor(items[-1].created_at, items[-1].id) if items else None
    return Page(items=items, has_next_page=len(rows) > size, end_cursor=end)
