"""The GraphQL endpoint: schema from `schema.graphql`, limits, error shaping, one transaction."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ariadne import graphql_sync, load_schema_from_path, make_executable_schema
from ariadne.explorer import ExplorerGraphiQL
from ariadne.validation import cost_validator
from ariadne.validation.introspection_disabled import IntrospectionDisabledRule
from flask import Blueprint, Response, current_app, g, jsonify, request
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Visitor,
    parse,
    value_from_ast_untyped,
    visit,
)
from graphql.validation import ASTValidationRule, ValidationContext, specified_rules, validate
from sqlalchemy.exc import SQLAlchemyError

from models.db import db
from web import security, sentry
from web.config import Settings
from web.logs import operation_var, request_id_var
from web.resolvers import bindables

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.graphql"
DID_YOU_MEAN = re.compile(r"\s*Did you mean .*\?$")
MAX_KEYED_STRING = 64
JSON_TYPES = ("application/json", "application/graphql-response+json")

log = logging.getLogger(__name__)
# Ariadne logs every error with a traceback, expected ones included; format_error logs the
# unexpected ones instead.
quiet = logging.getLogger(f"{__name__}.ariadne")
quiet.propagate = False
quiet.setLevel(logging.CRITICAL + 1)
blueprint = Blueprint("graphql", __name__)

# Costs: each field 1, list fields times their page size, so nested lists multiply.
LISTS = {"multipliers": ["first"], "complexity": 1}
COST_MAP = {
    "Query": {
        name: LISTS
        for name in (
            "allCustomers",
            "customers",
            "allOrders",
            "myOrders",
            "ordersByCustomer",
            "orders",
        )
    },
    "Customer": {"orders": LISTS},
}


def build_schema() -> GraphQLSchema:
    """The executable schema; fails at start-up if resolvers and `schema.graphql` drift."""
    return make_executable_schema(
        load_schema_from_path(str(SCHEMA_PATH)), *bindables, convert_names_case=True
    )


def depth_limit(max_depth: int) -> type[ASTValidationRule]:
    """A validation rule refusing operations nested deeper than `max_depth` fields."""

    class DepthLimit(ASTValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.fragments = {
                definition.name.value: definition
                for definition in context.document.definitions
                if isinstance(definition, FragmentDefinitionNode)
            }

        def depth(self, selection_set: SelectionSetNode | None, seen: frozenset[str]) -> int:
            deepest = 0
            for selection in selection_set.selections if selection_set else ():
                if isinstance(selection, FieldNode):
                    if selection.name.value.startswith("__"):
                        continue  # introspection has its own switch
                    deepest = max(deepest, 1 + self.depth(selection.selection_set, seen))
                elif isinstance(selection, InlineFragmentNode):
                    deepest = max(deepest, self.depth(selection.selection_set, seen))
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self.fragments.get(name)
                    if fragment is not None and name not in seen:
                        deepest = max(deepest, self.depth(fragment.selection_set, seen | {name}))
            return deepest

        def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
            if (found := self.depth(node.selection_set, frozenset())) > max_depth:
                self.report_error(
                    GraphQLError(
                        f"The operation is nested {found} levels deep; the limit is {max_depth}.",
                        node,
                        extensions={"code": "QUERY_TOO_DEEP"},
                    )
                )

    return DepthLimit


class FieldCounter(Visitor):
    """Counts the field selections in a document."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def enter_field(self, *_args: Any) -> None:
        self.count += 1


@dataclass(frozen=True)
class PreparedDocument:
    """A parsed document and what the rules that ignore variables found wrong with it."""

    document: DocumentNode
    errors: tuple[GraphQLError, ...]


class GraphQLService:
    """The schema and everything that does not change between requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = build_schema()
        self.depth_rule = depth_limit(settings.graphql_max_depth)
        self.explorer = ExplorerGraphiQL(title="Order service")
        # Each distinct document is parsed and checked against the static rules once; clients
        # send the same few documents. Only the cost, which depends on variables, is per request.
        self.prepare = lru_cache(maxsize=512)(self._prepare)
        self._cost_errors_by_shape = lru_cache(maxsize=1024)(self._cost_errors_for_shape)

    def parse(self, query: str) -> DocumentNode:
        return self.prepare(query).document

    def _prepare(self, query: str) -> PreparedDocument:
        document = parse(query, no_location=False, max_tokens=self.settings.graphql_max_tokens)
        # Validation compares fields pairwise; bounding their number bounds its cost.
        fields = FieldCounter()
        visit(document, fields)
        if fields.count > self.settings.graphql_max_fields:
            raise GraphQLError(
                f"The document selects {fields.count} fields; the limit is "
                f"{self.settings.graphql_max_fields}.",
                extensions={"code": "QUERY_TOO_LARGE"},
            )
        static_rules = (*specified_rules, self.depth_rule)
        if self.settings.is_production:
            static_rules += (IntrospectionDisabledRule,)
        return PreparedDocument(document, tuple(validate(self.schema, document, static_rules)))

    def operation_name(self, data: dict[str, Any]) -> str | None:
        """The operation a request names, or its document's only named operation."""
        if isinstance(data.get("operationName"), str):
            return data["operationName"][:100]
        try:
            document = self.parse(data["query"])
        except GraphQLError:
            return None
        names = [
            definition.name.value if definition.name else None
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode)
        ]
        return names[0] if len(names) == 1 else None

    def cost_rule(
        self, document: DocumentNode, variables: dict[str, Any]
    ) -> type[ASTValidationRule]:
        """The cost limit for this document with these variables."""
        variables = dict(variables)
        # An omitted variable costs what its default says it is.
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                for variable in definition.variable_definitions or ():
                    name = variable.variable.name.value
                    if name not in variables and variable.default_value is not None:
                        variables[name] = value_from_ast_untyped(variable.default_value)
        return cost_validator(
            maximum_cost=self.settings.graphql_max_cost,
            default_cost=1,
            variables=variables,
            cost_map=COST_MAP,
        )

    def cost_errors(self, query: str, data: dict[str, Any]) -> tuple[GraphQLError, ...]:
        """What the cost limit finds wrong with this request; the same answer for requests
        that differ only in what the check cannot see (see `cost_shape`)."""
        given = data.get("variables")
        variables = given if isinstance(given, dict) else {}
        shape = cost_shape(variables)
        if shape is None:
            return self._cost_errors(query, variables)
        return self._cost_errors_by_shape(query, shape)

    def _cost_errors(self, query: str, variables: dict[str, Any]) -> tuple[GraphQLError, ...]:
        document = self.prepare(query).document
        rule = self.cost_rule(document, variables)
        return tuple(validate(self.schema, document, (rule,)))

    def _cost_errors_for_shape(
        self, query: str, shape: tuple[tuple[str, Any], ...]
    ) -> tuple[GraphQLError, ...]:
        variables = {
            name: value[0]() if isinstance(value, tuple) else value for name, value in shape
        }
        return self._cost_errors(query, variables)

    def format_error(self, error: GraphQLError, debug: bool = False) -> dict[str, Any]:
        """Shape an error; unexpected exceptions are logged and hidden in production."""
        original = error.original_error
        # Only an exception raised while executing a field is a bug; one raised while checking
        # arguments (a bad Decimal, say) is the client's mistake.
        unexpected = error.path is not None and not isinstance(original, GraphQLError | None)
        if unexpected:
            log.error("resolver failed: %s", error.message, exc_info=original)
            sentry.capture(original)
            if self.settings.is_production:
                return {
                    "message": "Internal server error",
                    "path": error.path,
                    "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                }
        formatted: dict[str, Any] = dict(error.formatted)
        if self.settings.is_production:
            formatted["message"] = DID_YOU_MEAN.sub("", formatted["message"])
        elif debug and unexpected:
            formatted.setdefault("extensions", {})["exception"] = repr(original)
        return formatted

    def execute(self, data: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        try:
            prepared = self.prepare(data["query"])
        except GraphQLError as error:
            return {"errors": [self.format_error(error)]}

        def validator(_schema: GraphQLSchema, _document: DocumentNode, **_: Any) -> list:
            if prepared.errors:
                return list(prepared.errors)
            return list(self.cost_errors(data["query"], data))

        _, result = graphql_sync(
            self.schema,
            data,
            context_value=context,
            query_document=prepared.document,
            query_validator=validator,
            introspection=True,  # checked with the static rules, once per document
            debug=not self.settings.is_production,
            error_formatter=self.format_error,
            logger=quiet,
        )
        return result


def cost_shape(variables: dict[str, Any]) -> tuple[tuple[str, Any], ...] | None:
    """The variables as the cost check sees them, or None if they are too large to key on.

    The check (ariadne's) reads a variable's value only as a page size (`first`): a number or
    a numeric string, while an object or a list counts as no page size whatever it holds.
    Everywhere else it asks only whether a variable is given and whether it is null. So an
    object or a list is keyed by its type alone (`(dict,)`, `(list,)`: JSON has no tuples) and
    checked as an empty one, which answers those questions the same way.
    """
    shape = []
    for name, value in variables.items():
        if isinstance(value, dict | list):
            value = (type(value),)
        elif isinstance(value, str) and len(value) > MAX_KEYED_STRING:
            return None
        shape.append((name, value))
    return tuple(sorted(shape, key=lambda item: item[0]))


def error_response(status: int, message: str, code: str) -> Response:
    """A GraphQL-shaped error body for requests that never reached execution."""
    response = jsonify({"errors": [{"message": message, "extensions": {"code": code}}]})
    response.status_code = status
    return response


def service() -> GraphQLService:
    return current_app.extensions["graphql"]


@blueprint.get("/graphql")
@blueprint.get("/graphql/")
def explorer() -> Response:
    if service().settings.is_production:
        return error_response(405, "Send GraphQL requests as POST with a JSON body.", "BAD_REQUEST")
    return security.graphiql_response(service().explorer.html(request))


@blueprint.post("/graphql")
@blueprint.post("/graphql/")
def execute() -> Response:
    if request.mimetype not in JSON_TYPES:
        return error_response(
            415, "Send the request as JSON (Content-Type: application/json).", "BAD_REQUEST"
        )
    try:
        data = json.loads(request.get_data(cache=False))
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "The request body is not valid JSON.", "BAD_REQUEST")
    if isinstance(data, list):
        return error_response(400, "Batched requests are not supported.", "BAD_REQUEST")
    if not isinstance(data, dict) or not isinstance(data.get("query"), str):
        return error_response(
            400, "The body must be an object with a 'query' string.", "BAD_REQUEST"
        )

    g.graphql_operation = service().operation_name(data)
    operation_var.set(g.graphql_operation)
    session = db.session()
    session.info["request_id"] = request_id_var.get()
    context = {"request": request, "actor": g.get("actor"), "settings": service().settings}
    result = service().execute(data, context)
    try:
        session.commit()
    except SQLAlchemyError:
        log.exception("commit failed")
        session.rollback()
        return error_response(503, "The database is unavailable; try again.", "SERVICE_UNAVAILABLE")
    response = jsonify(result)
    # A document that never executed (syntax, validation, limits) is a bad request.
    response.status_code = 200 if "data" in result else 400
    g.graphql_outcome = _outcome(result)
    return response


def _outcome(result: dict[str, Any]) -> str:
    errors = result.get("errors") or ()
    if "data" not in result:
        return "bad_request"
    if not errors:
        return "ok"
    codes = {error.get("extensions", {}).get("code") for error in errors}
    if "UNAUTHENTICATED" in codes:
        return "unauthenticated"
    return "error" if "INTERNAL_SERVER_ERROR" in codes or None in codes else "bad_request"
