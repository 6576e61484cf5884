"""What every resolver needs: the caller, the settings, and the mutation payload shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from graphql import GraphQLError, GraphQLResolveInfo

from common.settings import Settings
from models.actors import Actor
from models.db import db, has_written
from models.errors import DomainError, ErrorCode, FieldError
from web.rate_limits import rate_limits

T = TypeVar("T")


class UnauthenticatedError(GraphQLError):
    def __init__(self) -> None:
        super().__init__(
            "Authentication required: send an access token as 'Authorization: Bearer <token>'.",
            extensions={"code": "UNAUTHENTICATED"},
        )


class BadUserInputError(GraphQLError):
    """A query argument that cannot be served; mutations report these in their payload."""

    def __init__(self, error: DomainError) -> None:
        first = error.errors[0]
        super().__init__(
            str(error),
            extensions={"code": "BAD_USER_INPUT", "field": first.field, "reason": first.code},
        )


class ForbiddenError(GraphQLError):
    """A field only admins may ask for, asked by someone else."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(str(error), extensions={"code": "FORBIDDEN"})


def actor_of(info: GraphQLResolveInfo) -> Actor:
    """The authenticated caller, or an UNAUTHENTICATED error."""
    actor = info.context.get("actor")
    if actor is None:
        raise UnauthenticatedError()
    return actor


def settings_of(info: GraphQLResolveInfo) -> Settings:
    return info.context["settings"]


def count_sms(info: GraphQLResolveInfo) -> None:
    """Count a mutation that sends an SMS against its caller's SMS_RATE_LIMIT, before it does
    anything: past the limit, RATE_LIMITED and no order, no SMS."""
    rate_limits().count_sms(actor_of(info).subject)


def query(
    operation: Callable[..., T], info: GraphQLResolveInfo, *, not_found: Any = None, **kwargs: Any
) -> T:
    """Run a read for the caller. NOT_FOUND answers `not_found` (null, or an empty list), so
    another customer's ids cannot be probed; FORBIDDEN (a list only admins may read) is an
    error of that code, as in a mutation's payload; other DomainErrors become BAD_USER_INPUT."""
    try:
        return operation(db.session(), actor=actor_of(info), **kwargs)
    except DomainError as error:
        if all(e.code is ErrorCode.NOT_FOUND for e in error.errors):
            return not_found
        if all(e.code is ErrorCode.FORBIDDEN for e in error.errors):
            raise ForbiddenError(error) from None
        raise BadUserInputError(error) from None


def mutation(
    operation: Callable[..., T], info: GraphQLResolveInfo, **kwargs: Any
) -> tuple[T | None, tuple[FieldError, ...]]:
    """Run one domain operation in the request's transaction (committed once, when the request
    ends): all of its writes, or none of them. When the transaction holds nothing else yet, a
    refusal rolls it back; otherwise a savepoint keeps the rest."""
    actor = actor_of(info)
    # The request's Session itself: each use of the `db.session` proxy looks it up again.
    session = db.session()
    if has_written(session):
        try:
            with session.begin_nested():
                return operation(session, actor=actor, **kwargs), ()
        except DomainError as error:
            return None, error.errors
    try:
        return operation(session, actor=actor, **kwargs), ()
    except DomainError as error:
        session.rollback()
        return None, error.errors
    except Exception:
        session.rollback()  # a bug must not leave half of an operation to be committed
        raise


def payload(
    key: str, value: object, errors: tuple[FieldError, ...], message: str, **extra: Any
) -> dict[str, Any]:
    """The payload every mutation answers: success, message, errors and fieldErrors."""
    return {
        key: value,
        "success": not errors,
        "message": message if not errors else errors[0].message,
        "errors": [error.message for error in errors],
        "field_errors": [
            {"field": error.field, "code": error.code, "message": error.message} for error in errors
        ],
        **extra,
    }
