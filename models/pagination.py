"""Keyset pagination as the Relay Cursor Connections spec defines it: a list newest first,
read forward (`first` rows after the cursor `after`) or backward (`last` rows before the
cursor `before`), with opaque cursors and a hard cap on page size."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from models.errors import DomainError, ErrorCode

DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_CURSOR = 200  # ours are about 100 characters

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows, in list order (newest first), and where it sits in its list."""

    items: Sequence[T]
    has_next_page: bool = False
    has_previous_page: bool = False
    start_cursor: str | None = None
    end_cursor: str | None = None


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """An opaque cursor naming a row's position in newest-first order."""
    raw = json.dumps([created_at.isoformat(), str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "after") -> tuple[datetime, uuid.UUID]:
    """The position inside a cursor; a DomainError (INVALID, on `field`) if it is not one of
    ours.

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
            field, ErrorCode.INVALID, f"{field} is not a valid cursor"
        ) from None


def page_size(size: int | None, field: str = "first") -> int:
    """A page size checked against the cap; a DomainError (INVALID) outside 1..MAX_PAGE."""
    if size is None:
        return DEFAULT_PAGE
    if not 1 <= size <= MAX_PAGE:
        raise DomainError.single(field, ErrorCode.INVALID, f"{field} must be 1 to {MAX_PAGE}")
    return size


@dataclass(frozen=True)
class _Keyset:
    """Comparisons with a position in newest-first order, on the columns (created_at, id)."""

    created_at: InstrumentedAttribute[datetime]
    row_id: InstrumentedAttribute[uuid.UUID]

    def later_in_list(self, cursor: str, field: str, *, inclusive: bool) -> ColumnElement[bool]:
        """Rows listed after the cursor's position (older), or at it when `inclusive`."""
        at, key = decode_cursor(cursor, field)
        tie = self.row_id <= key if inclusive else self.row_id < key
        return or_(self.created_at < at, and_(self.created_at == at, tie))

    def earlier_in_list(self, cursor: str, field: str, *, inclusive: bool) -> ColumnElement[bool]:
        """Rows listed before the cursor's position (newer), or at it when `inclusive`."""
        at, key = decode_cursor(cursor, field)
        tie = self.row_id >= key if inclusive else self.row_id > key
        return or_(self.created_at > at, and_(self.created_at == at, tie))


def paginate(
    session: Session,
    query: Select[Any],
    *,
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[uuid.UUID],
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Page[Any]:
    """One page of `query`'s rows newest first: the first `first` (default 20) of those after
    `after`, or the last `last` of those before `before` (both cursors bound the rows when
    both are given). One extra row is read to tell whether the page's own direction goes on.

    The other direction is answered as well, where the spec lets a server do so when it can
    efficiently: forward, hasPreviousPage is whether any row sits at `after` or before it;
    backward, hasNextPage is whether any row sits at `before` or after it (one indexed probe
    each). Without the cursor the page starts (or ends) the list, and the answer is false.
    """
    if first is not None and last is not None:
        raise DomainError.single(
            "last",
            ErrorCode.INVALID,
            "give first or last, not both: first pages forward from after, last backward "
            "from before",
        )
    backward = last is not None
    size = page_size(last, "last") if backward else page_size(first, "first")
    keys = _Keyset(created_at, row_id)
    window = query
    if after:
        window = window.where(keys.later_in_list(after, "after", inclusive=False))
    if before:
        window = window.where(keys.earlier_in_list(before, "before", inclusive=False))
    # Backward reads from the far end of the window, then turns the rows to list order.
    order = (created_at.asc(), row_id.asc()) if backward else (created_at.desc(), row_id.desc())
    rows = session.scalars(window.order_by(*order).limit(size + 1)).all()
    more = len(rows) > size
    items = list(reversed(rows[:size])) if backward else list(rows[:size])
    if backward:
        has_previous = more
        has_next = bool(before) and _any(
            session, query, keys.later_in_list(before, "before", inclusive=True)
        )
    else:
        has_next = more
        has_previous = bool(after) and _any(
            session, query, keys.earlier_in_list(after, "after", inclusive=True)
        )
    return Page(
        items=items,
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=encode_cursor(items[0].created_at, items[0].id) if items else None,
        end_cursor=encode_cursor(items[-1].created_at, items[-1].id) if items else None,
    )


def _any(session: Session, query: Select[Any], condition: ColumnElement[bool]) -> bool:
    """Whether `query` has a row meeting `condition`."""
    return bool(session.scalar(select(query.where(condition).exists())))
