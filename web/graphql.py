"""The GraphQL endpoint: schema from `schema.graphql`, limits, error shaping, one transaction.
What HTTP asks of it (media types, status codes, GET, caching) is in `web.graphql_http`."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ariadne import graphql_sync, load_schema_from_path, make_executable_schema
from ariadne.explorer import ExplorerGraphiQL
from flask import Blueprint, Response, current_app, g, request
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
)
from graphql.validation import specified_rules, validate
from sqlalchemy.exc import SQLAlchemyError

from common import sentry
from common.logs import operation_var, request_id_var
from common.settings import Settings
from models.db import db
from web import auth, database_errors, introspection, json_body, metrics, security
from web import graphql_http as http
from web import request_errors as codes
from web.document_limits import Measurements, bracket_nesting, cost, measure, merged_pairs
from web.persisted_queries import PersistedQueryError, persisted_queries
from web.rate_limits import rate_limits
from web.resolvers import bindables

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.graphql"
DID_YOU_MEAN = re.compile(r"\s*Did you mean .*\?$")
# Documents seen before are prepared once; only small ones are kept. Clients send the same
# few documents of a few hundred characters, and a prepared document costs up to 300 times
# its length in memory (a token with its location is about 600 bytes): whatever strangers
# send, the cache holds at most about 20 MB.
CACHED_DOCUMENT_CHARS = 1024
CACHED_DOCUMENTS = 64
# Validation stops after this many errors: each costs time, and a client fixes the first few.
MAX_ERRORS = 20
# A request runs one operation, but validation walks each operation (and each fragment) of its
# document again for its variables: many small ones cost several times the document's size.
MAX_OPERATIONS = 16
MAX_FRAGMENTS = 32
# Selections of one response field at one path (e.g. `id` from several fragments) are compared
# two by two, each comparison printing their arguments: at most this many pairs in all.
MAX_MERGED_PAIRS = 500

log = logging.getLogger(__name__)
# Ariadne logs every error with a traceback; format_error logs only the unexpected ones.
quiet = logging.getLogger(f"{__name__}.ariadne")
quiet.propagate = False
quiet.setLevel(logging.CRITICAL + 1)
blueprint = Blueprint("graphql", __name__)


def build_schema() -> GraphQLSchema:
    """The executable schema; fails at start-up if resolvers and `schema.graphql` drift."""
    return make_executable_schema(
        load_schema_from_path(str(SCHEMA_PATH)), *bindables, convert_names_case=True
    )


@dataclass(frozen=True)
class PreparedDocument:
    """A parsed document, its measurements, and what the rules that ignore variables found
    wrong with it."""

    document: DocumentNode | None
    measurements: Measurements | None
    errors: tuple[GraphQLError, ...]


class GraphQLService:
    """The schema and everything that does not change between requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = build_schema()
        self.explorer = ExplorerGraphiQL(title="Order service")
        self.static_rules = (*specified_rules, codes.KnownOperationTypes)
        if settings.is_production:
            self.static_rules += (introspection.disabled_rule(settings.schema_sdl_public),)
        self.sdl = SCHEMA_PATH.read_text()
        # Brackets nest once per field level and a few more inside argument values.
        self.max_nesting = 2 * settings.graphql_max_depth + 8
        # Only the cost, which depends on variables, is checked per request.
        self._prepare_cached = lru_cache(maxsize=CACHED_DOCUMENTS)(self._prepare)

    def prepare(self, query: str) -> PreparedDocument:
        """The document checked, from the cache when it is small (a refused one is kept too:
        asking again costs nothing)."""
        if len(query) <= CACHED_DOCUMENT_CHARS:
            return self._prepare_cached(query)
        return self._prepare(query)

    def _prepare(self, query: str) -> PreparedDocument:
        """Parse and check a document; a document refused before validation comes back with
        no `document`, and the reason as its one error."""
        try:
            return self._check(query)
        except GraphQLError as error:
            # Kept without its traceback, whose frames hold the parser and all its tokens.
            return PreparedDocument(None, None, (error.with_traceback(None),))

    def _check(self, query: str) -> PreparedDocument:
        """The checks, the cheap limits first: none takes more than time linear in the
        document (see `web.document_limits`)."""
        limits = self.settings
        try:
            document = parse(query, no_location=False, max_tokens=limits.graphql_max_tokens)
        except GraphQLSyntaxError as error:
            raise codes.parse_failed(error) from None
        except RecursionError:  # the parser recurses once per bracket
            raise codes.too_deep(self.max_nesting) from None
        if bracket_nesting(document) > self.max_nesting:
            raise codes.too_deep(self.max_nesting)
        measurements = measure(document)
        for what, count, limit in (
            ("operations", len(measurements.operations), MAX_OPERATIONS),
            ("fragments", len(measurements.fragments), MAX_FRAGMENTS),
        ):
            if count > limit:
                raise GraphQLError(
                    f"The document holds {count} {what}; the limit is {limit}.",
                    extensions={"code": "QUERY_TOO_LARGE"},
                )
        if measurements.fields > limits.graphql_max_fields:
            raise GraphQLError(
                f"The document selects {measurements.fields} fields once its fragments are "
                f"expanded; the limit is {limits.graphql_max_fields}.",
                extensions={"code": "QUERY_TOO_LARGE"},
            )
        if not measurements.cycle and (pairs := merged_pairs(measurements)) > MAX_MERGED_PAIRS:
            raise GraphQLError(
                f"The document selects fields of one response name at one path so often that "
                f"validation would compare {pairs} pairs of them; the limit is "
                f"{MAX_MERGED_PAIRS} (select each field once where you can).",
                extensions={"code": "QUERY_TOO_LARGE"},
            )
        deep = tuple(
            GraphQLError(
                f"The operation is nested {size.depth} levels deep; the limit is "
                f"{limits.graphql_max_depth}.",
                operation,
                extensions={"code": "QUERY_TOO_DEEP"},
            )
            for operation, size in measurements.operations
            if size.depth > limits.graphql_max_depth
        )
        if deep:
            return PreparedDocument(document, measurements, deep)
        errors = validate(self.schema, document, self.static_rules, max_errors=MAX_ERRORS)
        return PreparedDocument(document, measurements, codes.validation_failed(errors))

    def operation_name(self, data: dict[str, Any], prepared: PreparedDocument) -> str | None:
        """The operation a request names, or its document's only named operation."""
        if isinstance(data.get("operationName"), str):
            return data["operationName"][:100]
        document = prepared.document
        if document is None:
            return None
        names = [
            definition.name.value if definition.name else None
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode)
        ]
        return names[0] if len(names) == 1 else None

    def declared_variables(self, data: dict[str, Any], prepared: PreparedDocument) -> set[str]:
        """The variables the operation this request runs declares (none when there is no
        such operation: nothing runs)."""
        name = data.get("operationName")
        operation = (
            get_operation_ast(prepared.document, name if isinstance(name, str) else None)
            if prepared.document is not None
            else None
        )
        if operation is None:
            return set()
        return {each.variable.name.value for each in operation.variable_definitions or ()}

    def metrics_label(self, data: dict[str, Any], prepared: PreparedDocument) -> str:
        """The request's `operation` label in the metrics: the root field it selects."""
        document = prepared.document
        if document is None:
            return metrics.UNPARSED
        return metrics.operation_label(self.schema, document, data.get("operationName"))

    def mutates(self, data: dict[str, Any], prepared: PreparedDocument) -> bool:
        """Whether the request would run a mutation (or a subscription), which a GET must not."""
        if prepared.document is None:
            return False
        operation = get_operation_ast(prepared.document, data.get("operationName"))
        return operation is not None and operation.operation is not OperationType.QUERY

    def cost_errors(
        self, prepared: PreparedDocument, data: dict[str, Any]
    ) -> tuple[GraphQLError, ...]:
        """The cost limit's verdict on the operation this request runs, with its variables."""
        name = data.get("operationName")
        operation = get_operation_ast(prepared.document, name if isinstance(name, str) else None)
        if operation is None:
            return ()  # no operation to run: execution says so
        given = data.get("variables")
        variables = given if isinstance(given, dict) else {}
        found = cost(self.schema, prepared.measurements, operation, variables)
        maximum = self.settings.graphql_max_cost
        if found <= maximum:
            return ()
        return (
            GraphQLError(
                f"The query exceeds the maximum cost of {maximum}. Actual cost is {found}",
                operation,
                extensions={
                    "code": "QUERY_TOO_COSTLY",
                    "cost": {"requestedQueryCost": found, "maximumAvailable": maximum},
                },
            ),
        )

    def format_error(self, error: GraphQLError, debug: bool = False) -> dict[str, Any]:
        """Shape an error; unexpected exceptions are logged and hidden in production."""
        original = error.original_error
        failure = database_errors.classify(original) if error.path is not None else None
        if failure is not None:  # the database refused the field's change, or went away
            database_errors.log_failure(failure, original)
            return {**error.formatted, **database_errors.as_graphql_error(failure)}
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

    def middleware_for(self, query: str) -> list[Any] | None:
        if self.settings.is_production:
            return introspection.middleware_for(query)
        return None

    def execute(
        self, data: dict[str, Any], prepared: PreparedDocument, context: dict[str, Any]
    ) -> dict[str, Any]:
        if prepared.document is None:
            return {"errors": [self.format_error(error) for error in prepared.errors]}

        def validator(_schema: GraphQLSchema, _document: DocumentNode, **_: Any) -> list:
            if prepared.errors:
                return list(prepared.errors)
            return list(self.cost_errors(prepared, data))

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
            middleware=self.middleware_for(data["query"]),
            execution_context_class=codes.CodedExecution,
        )
        return result


def service() -> GraphQLService:
    return current_app.extensions["graphql"]


@blueprint.get("/graphql/schema.graphql")
def schema_sdl() -> Response:
    """The schema as SDL, `schema.graphql` as it is, unless SCHEMA_SDL_PUBLIC is off."""
    if not service().settings.schema_sdl_public:
        return http.error_response(404, "The schema is not published here.", "NOT_FOUND")
    response = Response(service().sdl, mimetype="text/plain")
    # Public, and revalidated each time: a deploy may change it.
    response.headers["Cache-Control"] = "public, no-cache"
    response.add_etag()
    return response.make_conditional(request)


def _wants_graphiql() -> bool:
    # A browser opening the endpoint: it prefers a page and asks no query.
    accepted = request.accept_mimetypes
    page = accepted.best_match(["text/html", http.JSON, http.GRAPHQL_RESPONSE])
    return page == "text/html" and "query" not in request.args and "extensions" not in request.args


@blueprint.route("/graphql", methods=["GET", "POST"])
@blueprint.route("/graphql/", methods=["GET", "POST"])
def execute() -> Response:
    """A GraphQL request over POST or GET (queries only); GraphiQL for a browser outside
    production."""
    # HEAD is a GET without the body (Flask routes it with GET): the same rules.
    over_get = request.method != "POST"
    # A refused token is answered 401 before anything else is wrong with the request, unless
    # the operation it runs needs no token (login, refreshToken): then it runs as a stranger's.
    refused_token = auth.token_refused()
    if over_get and not service().settings.is_production and _wants_graphiql():
        if refused_token:
            return auth.refusal()
        g.graphiql_page = True
        return security.graphiql_response(service().explorer.html(request))
    media = http.response_type(request.headers.get("Accept"))
    if media is None:
        if refused_token:
            return auth.refusal()
        return http.error_response(
            406, f"Accept {http.GRAPHQL_RESPONSE} or {http.JSON}.", "NOT_ACCEPTABLE"
        )
    try:
        read = http.read_request(request, over_get, media)
    except PersistedQueryError as error:
        # An unknown hash only asks for the document; the request that brings it is judged
        # then, its token too.
        return http.persisted_query_error(error, media)
    if isinstance(read, Response):
        return auth.refusal(media) if refused_token else read
    data, digest = read
    prepared = service().prepare(data["query"])
    if refused_token and not auth.needs_no_token(prepared.document, data.get("operationName")):
        return auth.refusal(media)
    if refused := json_body.refusals(data, service().declared_variables(data, prepared)):
        return http.graphql_response({"errors": refused}, media)
    if over_get and service().mutates(data, prepared):
        response = http.error_response(
            405, "Send mutations as POST: a GET only runs queries.", "METHOD_NOT_ALLOWED", media
        )
        response.headers["Allow"] = "POST"
        return response
    actor = g.get("actor")
    if digest and not prepared.errors and actor and rate_limits().may_persist(actor.subject):
        persisted_queries().remember(digest, data["query"])
    operation_var.set(service().operation_name(data, prepared))
    g.graphql_root_field = service().metrics_label(data, prepared)
    session = db.session()
    session.info["request_id"] = request_id_var.get()
    context = {"request": request, "actor": g.get("actor"), "settings": service().settings}
    result = http.request_error_without_data(service().execute(data, prepared, context))
    if database_errors.UNAVAILABLE.code in _codes(result):
        # A field lost the database: nothing of the request is kept, and all of it may be
        # repeated.
        session.rollback()
        return database_errors.response(database_errors.UNAVAILABLE, media=media)
    try:
        session.commit()
    except SQLAlchemyError as error:
        session.rollback()
        failure = database_errors.classify(error)
        if failure is None:
            raise  # a bug: the app's error handler answers 500
        database_errors.log_failure(failure, error)
        if failure.retry_after:
            return database_errors.response(failure, media=media)
        # Executed but not saved (a deferred key, say): what the fields said is void.
        result = {"data": None, "errors": [database_errors.as_graphql_error(failure)]}
    response = http.graphql_response(result, media)
    if over_get:
        http.cache_get_answer(response, result, authenticated=g.get("actor") is not None)
    g.graphql_outcome = _outcome(result)
    return response


def _codes(result: dict[str, Any]) -> set[str | None]:
    return {error.get("extensions", {}).get("code") for error in result.get("errors") or ()}


def _outcome(result: dict[str, Any]) -> str:
    if "data" not in result:
        return "bad_request"
    codes = _codes(result)
    if not codes:
        return "ok"
    if "UNAUTHENTICATED" in codes:
        return "unauthenticated"
    return "error" if "INTERNAL_SERVER_ERROR" in codes or None in codes else "bad_request"
