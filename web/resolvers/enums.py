"""The schema's enums whose values are models' own: a value added on one side only fails
the schema build (a Python one missing from the schema) or tests/test_schema_docs.py."""

from __future__ import annotations

from ariadne import EnumType

from models.errors import ErrorCode
from models.notifications import NotificationKind, NotificationStatus
from models.orders import OrderStatus

error_code_enum = EnumType("ErrorCode", ErrorCode)
order_status_enum = EnumType("OrderStatus", OrderStatus)
notification_status_enum = EnumType("NotificationStatus", NotificationStatus)
notification_kind_enum = EnumType("NotificationKind", NotificationKind)
