"""The database extension and the naming convention that keeps migrations stable."""

import uuid
from datetime import datetime
from typing import Annotated

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, mapped_column


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
