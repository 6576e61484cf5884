"""The database extension and the naming convention that keeps migrations stable."""

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, Engine, MetaData, event, exc, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import (
    DeclarativeBase,
    ORMExecuteState,
    Session,
    SessionTransaction,
    mapped_column,
)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


# expire_on_commit=False: a committed row is still readable when the response is shaped,
# without a SELECT per object after COMMIT.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


# Column shapes every table uses. clock_timestamp(), not now(): rows written in one transaction
# still get their own times, so newest-first lists keep the order they were written in.
UUIDPrimaryKey = Annotated[
    uuid.UUID, mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
]
Timestamp = Annotated[
    datetime, mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
]
UpdatedTimestamp = Annotated[
    datetime,
    mapped_column(
        DateTime(timezone=True),
        server_default=func.clock_timestamp(),
        onupdate=func.clock_timestamp(),
    ),
]


# -- has this transaction written anything? -------------------------------------------------
# A domain operation refused before it wrote can be undone by rolling back the transaction
# when nothing else was written in it, which costs no round trip; otherwise it runs inside a
# savepoint. Both ORM flushes and Core INSERT/UPDATE/DELETE statements count as writes.
_WROTE = "wrote"


# A statement SQLAlchemy does not see as a write (text such as `WITH ... INSERT ... RETURNING`,
# or an UPDATE ... RETURNING loaded into entities) declares it: `.execution_options(writes=True)`.
@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if (
        state.is_insert
        or state.is_update
        or state.is_delete
        or state.execution_options.get("writes")
    ):
        mode = state.session.info.get(_EACH_STATEMENT)
        if mode == READS_ONLY:
            raise UnexpectedWrite("a write in a session that reads only")
        if mode and has_written(state.session):
            raise UnexpectedWrite("a second write would commit apart from the first")
        state.session.info[_WROTE] = True


@event.listens_for(Session, "before_flush")
def _refuse_flush(session: Session, _context: object, _instances: object) -> None:
    if commits_each_statement(session):
        raise UnexpectedWrite("an ORM flush would commit each of its statements apart")


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _context: object) -> None:
    session.info[_WROTE] = True


@event.listens_for(Session, "after_transaction_end")
def _forget_writes(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_WROTE, None)
        session.info.pop(_EACH_STATEMENT, None)


def has_written(session: Session) -> bool:
    """Whether the session's current transaction has written anything."""
    return bool(session.info.get(_WROTE))


# -- a write that is a whole transaction ----------------------------------------------------
# A transaction costs two round trips of its own, BEGIN and COMMIT. When everything a
# transaction would hold is one writing statement (reads may come before it: under READ
# COMMITTED each statement sees what is committed when it starts, in a transaction or not),
# the statement alone is that transaction: PostgreSQL commits it when it ends, all of it or
# none. About a seventh of createOrder's time in the web process, and of PostgreSQL's. The
# same holds for reads that write nothing: a query's statements need no BEGIN and COMMIT.
T = TypeVar("T", bound=Callable[..., Any])


def one_statement(operation: T) -> T:
    """Mark a domain operation whose writes are a single statement."""
    operation.one_statement = True  # type: ignore[attr-defined]
    return operation


_EACH_STATEMENT = "commits_each_statement"
ONE_WRITE, READS_ONLY = "one write", "reads only"


class UnexpectedWrite(RuntimeError):
    """A session committing each statement by itself was asked for a write it does not
    allow: a second one, or any in a session that reads only (a bug, refused before it
    runs)."""


def commit_each_statement(session: Session, allow: str = ONE_WRITE) -> bool:
    """Have each of the session's statements commit as it ends, until the session's
    transaction ends; only for a session bound to an engine (a test's session joins an
    outer transaction) that has not begun one. Whether it did so. It then refuses, as
    `UnexpectedWrite`, a write beyond what `allow` says: ONE_WRITE or READS_ONLY."""
    if session.in_transaction() or not isinstance(session.get_bind(), Engine):
        return False
    # The pool sets the connection back to the engine's isolation level when it returns.
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    session.info[_EACH_STATEMENT] = allow
    return True


def commits_each_statement(session: Session) -> bool:
    """Whether the session's statements commit as they end: what one wrote stays written,
    whatever becomes of the session's transaction."""
    return bool(session.info.get(_EACH_STATEMENT))


# -- stale connections ----------------------------------------------------------------------
# A pooled connection may have died while it sat in the pool (a database restart, a failover,
# an idle timeout). Checking each one before use ("pre-ping") costs a round trip on every
# checkout; a connection handed back a moment ago is as alive as the statement that just used
# it, so only one that sat idle longer than this is checked.
PING_AFTER_IDLE_SECONDS = 2.0


def ping_when_idle(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Check a pooled connection before use when it sat idle over `idle_seconds`; a dead one
    is replaced by a new connection (the pool retries the checkout)."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < idle_seconds:
            return  # new, or back in the pool only a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(str(error)) from error
