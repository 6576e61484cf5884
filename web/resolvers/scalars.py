"""Custom scalars: exact decimals for money and ISO 8601 timestamps."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from ariadne import ScalarType
from graphql import FloatValueNode, IntValueNode, StringValueNode, ValueNode

decimal_scalar = ScalarType("Decimal")
datetime_scalar = ScalarType("DateTime")


@decimal_scalar.serializer
def serialize_decimal(value: Decimal) -> str:
    return str(value)


@decimal_scalar.value_parser
def parse_decimal(value: object) -> Decimal:
    # Floats arrive from JSON variables; repr() is the shortest exact form (1200.5 -> "1200.5").
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a Decimal is a number or a numeric string")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError("a Decimal must be a finite number")
    return number


@decimal_scalar.literal_parser
def parse_decimal_literal(node: ValueNode, variables: dict | None = None) -> Decimal:
    # A literal keeps its source text (1200.0 stays 1200.0), so no float rounding creeps in.
    if isinstance(node, IntValueNode | FloatValueNode | StringValueNode):
        return parse_decimal(node.value)
    raise ValueError("a Decimal is a number or a numeric string")


@datetime_scalar.serializer
def serialize_datetime(value: datetime) -> str:
    return value.isoformat()


@datetime_scalar.value_parser
def parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("a DateTime is an ISO 8601 string")
    return datetime.fromisoformat(value)
