"""Custom scalars: exact decimals for money and ISO 8601 timestamps."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from ariadne import ScalarType
from graphql import (
    FloatValueNode,
    GraphQLError,
    IntValueNode,
    StringValueNode,
    ValueNode,
    print_ast,
)

decimal_scalar = ScalarType("Decimal")
datetime_scalar = ScalarType("DateTime")
# A decimal as JSON writes a number, in the digits 0-9 only: an optional minus, no leading
# zeros, a point only between digits, an optional exponent. Python's Decimal also reads
# other scripts' digits (٣, full-width ones), underscores, NaN and Infinity, spaces around,
# a plus, `.5` and `5.`: one amount, one way to write it, as clients' JSON libraries do.
DECIMAL_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# A value the client can correct: the code a scalar's refusal carries to the client.
BAD_USER_INPUT = {"code": "BAD_USER_INPUT"}


@decimal_scalar.serializer
def serialize_decimal(value: Decimal) -> str:
    return str(value)


def _decimal(value: object) -> Decimal:
    """The Decimal `value` writes; ValueError, saying why, when it writes none."""
    # Floats arrive from JSON variables; repr() is the shortest exact form (1200.5 -> "1200.5").
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a Decimal is a number or a numeric string")
    text = repr(value) if isinstance(value, float) else str(value)
    if not DECIMAL_TEXT.fullmatch(text):
        raise ValueError(
            f"{value!r} is not a decimal number: write it with the digits 0-9 as JSON writes "
            'a number, e.g. "1200.50" (no spaces, no plus, a digit each side of the point)'
        )
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond what a Decimal can hold
        raise ValueError(f"{value!r} is not a decimal number") from None


@decimal_scalar.value_parser
def parse_decimal(value: object) -> Decimal:
    # graphql-core prefixes the variable's name and keeps this error's extensions.
    try:
        return _decimal(value)
    except ValueError as error:
        raise GraphQLError(f"Expected type 'Decimal'. {error}", extensions=BAD_USER_INPUT) from None


@decimal_scalar.literal_parser
def parse_decimal_literal(node: ValueNode, variables: dict | None = None) -> Decimal:
    # A literal keeps its source text (1200.0 stays 1200.0), so no float rounding creeps in.
    try:
        if not isinstance(node, IntValueNode | FloatValueNode | StringValueNode):
            raise ValueError("a Decimal is a number or a numeric string")
        return _decimal(node.value)
    except ValueError as error:
        # Reported as it is raised: the words graphql-core would have put around it.
        raise GraphQLError(
            f"Expected value of type 'Decimal', found {print_ast(node)}; {error}",
            node,
            extensions=BAD_USER_INPUT,
        ) from None


@datetime_scalar.serializer
def serialize_datetime(value: datetime) -> str:
    return value.isoformat()


@datetime_scalar.value_parser
def parse_datetime(value: object) -> datetime:
    try:
        if not isinstance(value, str):
            raise ValueError("a DateTime is an ISO 8601 string")
        return datetime.fromisoformat(value)
    except ValueError as error:
        raise GraphQLError(
            f"Expected type 'DateTime'. {error}", extensions=BAD_USER_INPUT
        ) from None
