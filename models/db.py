"""The database extension and the naming convention that keeps migrations stable."""

import time
import uuid
from datetime import datetime
from typing import Annotated, Any

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
# A refused mutation in a transaction that holds no write yet is undone by rolling the
# transaction back, with no savepoint; a caller is remembered by token only once its customer
# is committed. ORM flushes and Core INSERT/UPDATE/DELETE statements count as writes; a text
# statement that writes says so: `.execution_options(writes=True)`.
_WROTE = "wrote"


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if (
        state.is_insert
        or state.is_update
        or state.is_delete
        or state.execution_options.get("writes")
    ):
        state.session.info[_WROTE] = True


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _context: object) -> None:
    session.info[_WROTE] = True


@event.listens_for(Session, "after_transaction_end")
def _forget_writes(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


def has_written(session: Session) -> bool:
    """Whether the session's current transaction has written anything."""
    return bool(session.info.get(_WROTE))


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
