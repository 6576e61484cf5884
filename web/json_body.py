"""A GraphQL request's JSON body, read strictly.

JSON's grammar admits values that no GraphQL input can be and nothing downstream can carry: a
lone UTF-16 surrogate (`"\\ud800"` decodes to a string UTF-8 cannot encode, so PostgreSQL, the
identity provider and the logs cannot take it), a number beyond a double (`1e400` decodes to
infinity), NaN and Infinity (not JSON at all, though Python reads them), and arrays nested
deeper than the parser's stack. They are refused here, before the request reaches the schema,
with an error naming where they are. A lone surrogate written into the document itself is a
syntax error of graphql-core's lexer; it is reported the same way, naming the argument or
input field it was given to.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Collection, Iterator
from itertools import islice
from typing import Any

from graphql import GraphQLSyntaxError, Lexer, Source, TokenKind

from models.validation import SURROGATE

MAX_ERRORS = 10
# What graphql-core's lexer stops at when a string holds a lone surrogate: the character
# itself, or an escape of one (`\\ud800`, `\\u{D800}`; a valid pair is no error).
LONE_IN_DOCUMENT = re.compile(
    r"[\ud800-\udfff]|\\u(?P<fixed>[dD][89a-fA-F][0-9a-fA-F]{2})"
    r"|\\u\{0*(?P<wide>[dD][89a-fA-F][0-9a-fA-F]{2})\}"
)


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


def refusals(data: dict[str, Any], declared: Collection[str]) -> list[dict[str, Any]]:
    """GraphQL errors (BAD_USER_INPUT) for each value in the request's document, operationName
    and variables that no GraphQL input can be; empty when there is none. Only the values of
    the `declared` variables (those of the operation the request runs) are looked at: GraphQL
    reads no other, so nothing else could reach a resolver.

    These refuse the whole request, as a variable of the wrong type does, rather than answer
    in a mutation's payload: the lexer refuses a lone surrogate in the document before anything
    runs, so a variable holding one gets the same kind of answer; it is the same for every
    operation (queries and the sign-in mutations have no payload errors); and no resolver, and
    so no database write, ever sees the value. The error names the variable and the path inside
    it, or the argument a literal was given to, so a client can tell its user which field.
    """
    errors = _document_refusals(data["query"])
    name = data.get("operationName")
    if isinstance(name, str) and (found := SURROGATE.search(name)):
        errors.append(_error(f"operationName {_holds(found.group())}", field="operationName"))
    variables = data.get("variables")
    if isinstance(variables, dict):
        for variable, value in variables.items():
            if len(errors) >= MAX_ERRORS:
                break
            if found := SURROGATE.search(variable):
                errors.append(_error(f"A variable name {_holds(found.group())}", field=None))
                continue
            if variable not in declared:
                continue
            for path, problem in islice(_problems(variable, value), MAX_ERRORS - len(errors)):
                errors.append(
                    _error(
                        f"Variable '${variable}' got invalid value at '{path}'; {problem}.",
                        field=path,
                        variable=variable,
                    )
                )
    return errors[:MAX_ERRORS]


def _holds(surrogate: str | int) -> str:
    point = surrogate if isinstance(surrogate, int) else ord(surrogate)
    return (
        f"holds a lone UTF-16 surrogate (U+{point:04X}), which is not text; "
        "send the character as a surrogate pair, or not at all"
    )


def _document_refusals(query: str) -> list[dict[str, Any]]:
    """An error naming the argument or input field whose string literal holds a lone
    surrogate, where that is the first thing graphql-core's lexer stops at; else none, and
    the document goes on to graphql-core as it is."""
    if query.isascii() and "\\u" not in query:
        return []  # neither a surrogate nor an escape of one: most documents
    lexer = Lexer(Source(query))
    try:
        while lexer.advance().kind is not TokenKind.EOF:
            pass
    except GraphQLSyntaxError as error:
        position = error.positions[0] if error.positions else 0
        found = LONE_IN_DOCUMENT.match(query, position)
        if found is None:
            return []
        escaped = found.group("fixed") or found.group("wide")
        point = int(escaped, 16) if escaped else ord(found.group())
        name = _literal_of(lexer, query, position)
        line, column = error.locations[0] if error.locations else (1, 1)
        where = f"The string given to '{name}'" if name else "The document"
        return [
            {
                "message": f"{where} (line {line}, column {column}) {_holds(point)}.",
                "locations": [{"line": line, "column": column}],
                "extensions": {"code": "BAD_USER_INPUT", "field": name, "reason": "INVALID"},
            }
        ]
    return []


def _literal_of(lexer: Lexer, query: str, position: int) -> str | None:
    """The argument or input field a string starting before `position` is the value of:
    the name in `name: "..."`, the last two tokens the lexer read."""
    colon = lexer.token
    name = colon.prev
    # The surrogate must be inside the string right after the colon, not in a comment.
    inside = query[colon.end : position].lstrip(" \t\r\n,\ufeff").startswith('"')
    if inside and colon.kind is TokenKind.COLON and name and name.kind is TokenKind.NAME:
        return name.value
    return None


# Where a value sits inside a variable: the step to its container (None: the variable
# itself) and its key or index there. Each value's step is one small tuple.
_Step = tuple[Any, str | int]


def _problems(name: str, value: Any) -> Iterator[tuple[str, str]]:
    """(path, problem) for each unusable value inside one variable, walked without recursion
    (the JSON decoder allows nesting deeper than a recursive walk could follow). A path is
    written out only for a problem found: written for every item, a long name (or key) times
    many items inside it made a 64 KiB body cost hundreds of megabytes."""
    pending: deque[tuple[_Step | None, Any]] = deque([(None, value)])
    while pending:
        step, value = pending.popleft()
        if isinstance(value, str):
            if found := SURROGATE.search(value):
                yield _path(name, step), f"the string {_holds(found.group())}"
        elif isinstance(value, float):
            if not math.isfinite(value):
                yield _path(name, step), "the number is beyond the range of a double"
        elif isinstance(value, dict):
            for key, item in value.items():
                if found := SURROGATE.search(key):
                    yield _path(name, step), f"a field name {_holds(found.group())}"
                else:
                    pending.append(((step, key), item))
        elif isinstance(value, list):
            pending.extend(((step, index), item) for index, item in enumerate(value))


def _path(name: str, step: _Step | None) -> str:
    """The path of a value as a client writes it: `input.items[2].name`."""
    parts: list[str] = []
    while step is not None:
        step, key = step
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return name + "".join(reversed(parts))


def _error(message: str, *, field: str | None, variable: str | None = None) -> dict[str, Any]:
    extensions: dict[str, Any] = {"code": "BAD_USER_INPUT", "field": field, "reason": "INVALID"}
    if variable is not None:
        extensions["variable"] = variable
    return {"message": message, "extensions": extensions}
