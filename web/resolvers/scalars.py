"""Custom scalars: exact decimals for money and ISO 8601 timestamps."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from ariadne import ScalarType
from graphql import FloatValueNode, IntValueNode, StringValueNode, ValueNode

decimal_scalar = ScalarType("Decimal")
datetime_scalar = ScalarType("DateTime")
# A decimal as JSON and GraphQL write numbers, in the digits 0-9 only: Python's Decimal also
# reads other scripts' digits (٣, full-width ones), underscores, NaN and Infinity, none of
# them money a person would read as such.
DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@decimal_scalar.serializer
def serialize_decimal(value: Decimal) -> str:
    return str(value)


@decimal_scalar.value_parser
def parse_decimal(value: object) -> Decimal:
    # Floats arrive from JSON variables; repr() is the shortest exact form (1200.5 -> "1200.5").
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a Decimal is a number or a numeric string")
    text = repr(value) if isinstance(value, float) else str(value).strip(" \t\r\n")
    if not DECIMAL_TEXT.fullmatch(text):
        raise ValueError(f"{value!r} is not a decimal number: write it with the digits 0-9")
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond what a Decimal can hold
        raise ValueError(f"{value!r} is not a decimal number") from None


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
