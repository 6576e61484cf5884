"""The database extension and the naming convention that keeps migrations stable."""

import uuid
from datetime import datetime
from typing import Annotated

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, MetaData, event, func
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


# A statement that writes yet runs as a SELECT (`WITH ... INSERT ... RETURNING` loaded into
# entities) declares it: `.execution_options(writes=True)`.
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
