"""What a client is told when the database refuses a request's change or cannot be reached.

A refused change (an IntegrityError: a unique key a racing duplicate took first, a row that
went meanwhile) would be refused again, so it is a CONFLICT and never "try again": repeating
a createOrder without an idempotencyKey could place the order twice. Only a database that is
lost or out of reach (a dropped or refused connection, a failover, no pooled connection free
in time) is worth repeating: 503 with Retry-After.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Response, jsonify
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)

# About how long a failover or a restart keeps the database away, and the pool's own wait.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class DatabaseFailure:
    """What to answer: an error code and message, and the HTTP status of a request refused
    outside GraphQL execution (inside it a GraphQL error is 200, as any other)."""

    code: str
    message: str
    status: int
    retry_after: int | None = None


CONFLICT = DatabaseFailure(
    "CONFLICT",
    "The change conflicts with one saved meanwhile and was not made; "
    "read the current data before deciding to make it again.",
    409,
)
UNAVAILABLE = DatabaseFailure(
    "SERVICE_UNAVAILABLE",
    f"The database is unavailable; try again in {RETRY_AFTER_SECONDS} s (repeat a createOrder "
    "with the same idempotencyKey, so that it is placed once).",
    503,
    RETRY_AFTER_SECONDS,
)


# SQLAlchemy's words for a transaction whose connection was invalidated under it (the same
# PendingRollbackError also follows a failed flush, which is no outage).
RECONNECT_PENDING = "Can't reconnect until invalid"


def classify(error: BaseException | None) -> DatabaseFailure | None:
    """CONFLICT, UNAVAILABLE, or None for an error that is no database failure of these
    kinds (a bug: answered as one)."""
    if isinstance(error, IntegrityError):
        return CONFLICT
    if isinstance(error, OperationalError | PoolTimeout) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    ):
        return UNAVAILABLE
    if isinstance(error, PendingRollbackError) and RECONNECT_PENDING in str(error):
        # A later statement of a transaction whose connection was lost: the same outage.
        return UNAVAILABLE
    return None


def log_failure(failure: DatabaseFailure, error: BaseException) -> None:
    """One WARNING line: the constraint a conflict ran into (never the values, which may be
    personal), or why the database was out of reach."""
    if failure is CONFLICT:
        diagnostics = getattr(getattr(error, "orig", None), "diag", None)
        constraint = getattr(diagnostics, "constraint_name", None) or "unknown"
        log.warning("the database refused a change: constraint %s", constraint)
    else:
        log.warning("database unavailable: %s", getattr(error, "orig", None) or error)


def as_graphql_error(failure: DatabaseFailure) -> dict[str, object]:
    return {"message": failure.message, "extensions": {"code": failure.code}}


def response(
    failure: DatabaseFailure, status: int | None = None, media: str = "application/json"
) -> Response:
    """The failure as a GraphQL-shaped body in `media`, with `status` (default: the failure's
    own) and, when the request is worth repeating, Retry-After."""
    answer = jsonify({"errors": [as_graphql_error(failure)]})
    answer.status_code = status or failure.status
    answer.content_type = f"{media}; charset=utf-8"
    if failure.retry_after:
        answer.headers["Retry-After"] = str(failure.retry_after)
    return answer
