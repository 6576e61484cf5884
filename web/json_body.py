"""A GraphQL request's JSON body, read strictly.

JSON's grammar admits values that no GraphQL input can be and nothing downstream can carry: a
lone UTF-16 surrogate (`"\\ud800"` decodes to a string UTF-8 cannot encode, so PostgreSQL, the
identity provider and the logs cannot take it), a number beyond a double (`1e400` decodes to
infinity), NaN and Infinity (not JSON at all, though Python reads them), and arrays nested
deeper than the parser's stack. They are refused here, before the request reaches the schema,
with an error naming where they are.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterator
from typing import Any

from models.validation import SURROGATE

MAX_ERRORS = 10


class UnreadableBody(ValueError):
    """The body is not JSON the service can read; the message says why, for the client."""


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load(raw: bytes) -> Any:
    """The decoded body; UnreadableBody if it is not JSON, or nests too deeply to decode."""
    try:
        return json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise UnreadableBody("The request body is nested too deeply.") from None
    except ValueError:  # UnicodeDecodeError included
        raise UnreadableBody("The request body is not valid JSON.") from None


def refusals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """GraphQL errors (BAD_USER_INPUT) for the request's operationName and variables, one
    for each value in them that no GraphQL input can be; empty when there is none.

    These are refused as a whole request, like a variable of the wrong type, rather than in
    a mutation's payload: the same character written into the document is already a syntax
    error of graphql-core's lexer, so both ways of sending it get the same kind of answer, for
    every operation alike (queries and the sign-in mutations have no payload errors), and no
    resolver ever sees it. The document itself (`query`) is left to that lexer.
    """
    errors: list[dict[str, Any]] = []
    name = data.get("operationName")
    if isinstance(name, str) and (found := SURROGATE.search(name)):
        errors.append(_error(f"operationName {_holds(found.group())}", field="operationName"))
    variables = data.get("variables")
    if isinstance(variables, dict):
        for variable, value in variables.items():
            if found := SURROGATE.search(variable):
                errors.append(_error(f"A variable name {_holds(found.group())}", field=None))
                continue
            for path, problem in _problems(variable, value):
                errors.append(
                    _error(
                        f"Variable '${variable}' got invalid value at '{path}'; {problem}.",
                        field=path,
                        variable=variable,
                    )
                )
    return errors[:MAX_ERRORS]


def _holds(surrogate: str) -> str:
    return (
        f"holds a lone UTF-16 surrogate (U+{ord(surrogate):04X}), which is not text; "
        "send the character as a surrogate pair, or not at all"
    )


def _problems(name: str, value: Any) -> Iterator[tuple[str, str]]:
    """(path, problem) for each unusable value inside one variable, walked without recursion
    (the JSON decoder allows nesting deeper than a recursive walk could follow)."""
    pending: deque[tuple[str, Any]] = deque([(name, value)])
    while pending:
        path, value = pending.popleft()
        if isinstance(value, str):
            if found := SURROGATE.search(value):
                yield path, f"the string {_holds(found.group())}"
        elif isinstance(value, float):
            if not math.isfinite(value):
                yield path, "the number is beyond the range of a double"
        elif isinstance(value, dict):
            for key, item in value.items():
                if found := SURROGATE.search(key):
                    yield path, f"a field name {_holds(found.group())}"
                else:
                    pending.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            pending.extend((f"{path}[{index}]", item) for index, item in enumerate(value))


def _error(message: str, *, field: str | None, variable: str | None = None) -> dict[str, Any]:
    extensions: dict[str, Any] = {"code": "BAD_USER_INPUT", "field": field, "reason": "INVALID"}
    if variable is not None:
        extensions["variable"] = variable
    return {"message": message, "extensions": extensions}
