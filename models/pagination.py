"""Keyset pagination: newest first, with opaque cursors and a hard cap on page size."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from models.errors import DomainError, ErrorCode

DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_CURSOR = 200  # ours are about 100 characters

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
    """The position inside a cursor; a DomainError (INVALID) if it is not one of ours.

    A cursor comes from the client, so anything may be inside: it must be short (ours are
    about 100 characters, which also bounds how deeply its JSON can nest), strict base64url
    of UTF-8 JSON, a list of exactly two strings, an aware timestamp and a UUID, and exactly
    what `encode_cursor` writes for them.
    """
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        position = json.loads(raw.decode("utf-8"))
        if not (
            isinstance(position, list)
            and len(position) == 2
            and all(isinstance(part, str) for part in position)
        ):
            raise ValueError("not a position")
        created = datetime.fromisoformat(position[0])
        if created.tzinfo is None:
            raise ValueError("no time zone")
        # In UTC it must still be a datetime: 0001-01-01T00:00+01:00 is not one.
        created.astimezone(UTC)
        row_id = uuid.UUID(position[1])
        # What we would have written for that position, to the character: the parsers are
        # lenient (datetime.fromisoformat stops at a NUL, uuid.UUID takes braces and URNs).
        if encode_cursor(created, row_id) != cursor.rstrip("="):
            raise ValueError("not a cursor of ours")
        return created, row_id
    except (ValueError, OverflowError):  # binascii.Error and UnicodeError are ValueErrors
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
