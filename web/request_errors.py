"""The codes of request errors: every error of a request that was read but never executed
names its kind in `extensions.code`, so a client branches on the code, never on the message.

Apollo Server's well-known codes where it has one: GRAPHQL_PARSE_FAILED (the document does
not parse), GRAPHQL_VALIDATION_FAILED (it does not validate; production's refusal of
`__schema` also says `validationErrorCode: INTROSPECTION_DISABLED`, as Apollo's does),
BAD_USER_INPUT (a variable that does not fit its type, or a required one left out) and
OPERATION_RESOLUTION_FAILURE (no operation of that name, or several and no name). The limits
have their own: QUERY_TOO_DEEP, QUERY_TOO_LARGE (the token limit too), QUERY_TOO_COSTLY.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    ValidationRule,
    get_operation_ast,
)
from graphql.execution import ExecutionContext

PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_USER_INPUT = "BAD_USER_INPUT"
OPERATION_RESOLUTION_FAILURE = "OPERATION_RESOLUTION_FAILURE"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
# How graphql-core's parser words its refusal of a document past `max_tokens`: a limit of
# ours, not a syntax error of the client's.
TOKEN_LIMIT = "Syntax Error: Document contains more than "  # noqa: S105 - no password


def coded(error: GraphQLError, code: str) -> GraphQLError:
    """`error` with `code` as its extensions.code, unless it names one already."""
    if not (error.extensions or {}).get("code"):
        error.extensions = {"code": code, **(error.extensions or {})}
    return error


def parse_failed(error: GraphQLSyntaxError) -> GraphQLError:
    """A parser's refusal, coded: the token limit's is QUERY_TOO_LARGE, the rest are the
    client's syntax errors."""
    too_large = error.message.startswith(TOKEN_LIMIT)
    return coded(error, "QUERY_TOO_LARGE" if too_large else PARSE_FAILED)


def validation_failed(errors: Iterable[GraphQLError]) -> tuple[GraphQLError, ...]:
    return tuple(coded(error, VALIDATION_FAILED) for error in errors)


def too_deep(limit: int) -> GraphQLError:
    return GraphQLError(
        f"The document nests brackets more than {limit} deep.",
        extensions={"code": "QUERY_TOO_DEEP"},
    )


class KnownOperationTypes(ValidationRule):
    """An operation of a type the schema has no root for (a subscription, here) is refused
    when the document is validated, as graphql-js 17 does, not later without a code."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
        kind = node.operation
        if self.context.schema.get_root_type(kind) is None:
            self.report_error(
                GraphQLError(f"The {kind.value} operation is not supported by the schema.", node)
            )


class CodedExecution(ExecutionContext):
    """graphql-core's execution, whose refusals to start are coded: no operation to run is
    OPERATION_RESOLUTION_FAILURE; the only other refusal is about the variables."""

    @classmethod
    def build(  # type: ignore[override]
        cls,
        schema: Any,
        document: Any,
        root_value: Any = None,
        context_value: Any = None,
        raw_variable_values: Any = None,
        operation_name: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> list[GraphQLError] | ExecutionContext:
        built = super().build(
            schema,
            document,
            root_value,
            context_value,
            raw_variable_values,
            operation_name,
            *args,
            **kwargs,
        )
        if isinstance(built, list):
            found = get_operation_ast(document, operation_name) is not None
            code = BAD_USER_INPUT if found else OPERATION_RESOLUTION_FAILURE
            return [coded(error, code) for error in built]
        return built
