"""GraphQL over HTTP, as the GraphQL-over-HTTP specification asks: what a request may carry
(POST with a JSON body, or GET with URL parameters), the media type of the answer, its status,
and how long a GET's answer may be kept.

The answer is `application/graphql-response+json` to a client that prefers it, else
`application/json` (also to a client that sends no Accept header, as older clients do). The
two differ in their status: a request the service read but did not execute (a document that
does not parse or validate, a variable of the wrong type, a limit) answers 400 in the new
media type and 200 in the old, whose clients cannot tell a 400 of ours from a proxy's. A
request that is not a GraphQL request at all is refused in both: 415 for a body that is not
JSON, 400 for one without a `query` string.
"""

from __future__ import annotations

from typing import Any

from flask import Request, Response, current_app
from werkzeug.datastructures import MultiDict

from web import json_body
from web.persisted_queries import PersistedQueryError, persisted_queries

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
# What a POST body may be sent as.
REQUEST_TYPES = (JSON, GRAPHQL_RESPONSE)
# How long a shared cache may keep the answer to an anonymous GET that had no error: the
# few queries a stranger can run say nothing about anyone.
PUBLIC_MAX_AGE = 60
# Parameters besides `query`, and the JSON types each may have (null is as good as absent).
OPTIONAL_PARAMETERS = (("operationName", str), ("variables", dict), ("extensions", dict))


class MalformedRequest(ValueError):
    """Not a GraphQL-over-HTTP request; the message says why, for the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def response_type(accept: str | None) -> str | None:
    """The media type to answer in: of the two, the one `accept` prefers (on a tie, the one it
    lists first), application/json for no header or a wildcard; None when it takes neither."""
    if accept is None or not accept.strip():
        return JSON
    chosen, best = None, 0.0
    for item in accept.split(","):
        kind, *parameters = item.split(";")
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = kind.strip().lower()
        if kind == GRAPHQL_RESPONSE:
            choice = GRAPHQL_RESPONSE
        elif kind in (JSON, "application/*", "*/*"):
            choice = JSON
        else:
            continue
        if quality > best:
            chosen, best = choice, quality
    return chosen


def read_post(request: Request) -> dict[str, Any]:
    """The parameters of a POST: a JSON object in the body."""
    if request.mimetype not in REQUEST_TYPES:
        raise MalformedRequest(
            "Send the request as JSON (Content-Type: application/json).", status=415
        )
    try:
        data = json_body.load(request.get_data(cache=False))
    except json_body.UnreadableBody as error:
        raise MalformedRequest(str(error)) from None
    if isinstance(data, list):
        raise MalformedRequest("Batched requests are not supported.")
    if not isinstance(data, dict):
        raise MalformedRequest("The body must be an object with a 'query' string.")
    return _checked(data)


def read_get(args: MultiDict[str, str]) -> dict[str, Any]:
    """The parameters of a GET, from the URL: `variables` and `extensions` as JSON text, and an
    empty `operationName` as none."""
    data: dict[str, Any] = {}
    if "query" in args:
        data["query"] = args["query"]
    if args.get("operationName"):
        data["operationName"] = args["operationName"]
    for name in ("variables", "extensions"):
        if name in args:
            try:
                data[name] = json_body.load(args[name].encode())
            except json_body.UnreadableBody:
                raise MalformedRequest(f"The '{name}' parameter must be a JSON object.") from None
    return _checked(data)


def read_request(
    request: Request, over_get: bool, media: str
) -> tuple[dict[str, Any], str | None] | Response:
    """The request's parameters, with the document a persisted query's hash stands for, and
    the hash to keep a document sent with one under; or the answer, in `media`, to a request
    that cannot be read (400, 415). A hash the service does not know raises its
    PersistedQueryError: that asks the client for the document, no refusal of the request."""
    try:
        data = read_get(request.args) if over_get else read_post(request)
        digest = persisted_queries().resolve(data)
        require_query(data, over_get)
    except MalformedRequest as error:
        return error_response(error.status, str(error), "BAD_REQUEST", media)
    except PersistedQueryError as error:
        if not error.malformed:
            raise
        return persisted_query_error(error, media)
    return data, digest


def persisted_query_error(error: PersistedQueryError, media: str) -> Response:
    """The answer to an `extensions.persistedQuery` the service cannot use: 400 when it is
    malformed, else (a hash not found) a request error's status."""
    result = {"errors": [{"message": str(error), "extensions": {"code": error.code}}]}
    return graphql_response(result, media, 400 if error.malformed else None)


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without its null parameters, once each has its type; `query` may be missing (a
    persisted query's hash stands in for it), never anything but a string."""
    if data.get("query") is not None and not isinstance(data["query"], str):
        raise MalformedRequest("The body must be an object with a 'query' string.")
    for name, kind in OPTIONAL_PARAMETERS:
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            what = "a string" if kind is str else "an object"
            raise MalformedRequest(f"The '{name}' parameter must be {what}.")
    return {name: value for name, value in data.items() if value is not None}


def require_query(data: dict[str, Any], over_get: bool) -> None:
    if isinstance(data.get("query"), str):
        return
    if over_get:
        raise MalformedRequest("Give the query in the URL's 'query' parameter.")
    raise MalformedRequest("The body must be an object with a 'query' string.")


def request_error_without_data(result: dict[str, Any]) -> dict[str, Any]:
    """`result` without `data` when the operation never ran: Ariadne answers `data: null` to
    an error raised before execution (a variable of the wrong type, an unknown operation
    name), which the GraphQL spec answers without `data`. Only a field's error has a path."""
    errors = result.get("errors")
    if result.get("data", ...) is None and errors and not any("path" in e for e in errors):
        return {key: value for key, value in result.items() if key != "data"}
    return result


def graphql_response(result: dict[str, Any], media: str, status: int | None = None) -> Response:
    """`result` in `media`; its status unless given: 200 once the operation ran, else 400 in
    the new media type and 200 in the old (see the module's docstring)."""
    if status is None:
        status = 200 if "data" in result or media == JSON else 400
    response = current_app.json.response(result)
    response.status_code = status
    response.content_type = f"{media}; charset=utf-8"
    return response


def error_response(status: int, message: str, code: str, media: str = JSON) -> Response:
    """A GraphQL-shaped error for a request that never reached execution."""
    result = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return graphql_response(result, media, status)


def cache_get_answer(response: Response, result: dict[str, Any], authenticated: bool) -> None:
    """Let caches keep the answer to a GET query where that is safe: a signed-in caller's only
    in its own browser (`private`, asked again each time), a stranger's complete answer in any
    cache for a minute, an error nowhere (the `no-store` every other answer gets)."""
    # Origin: whether it carries CORS headers depends on the page that asked.
    response.vary.update(("Accept", "Authorization", "Origin"))
    if authenticated:
        response.headers["Cache-Control"] = "private, no-cache"
    elif response.status_code == 200 and "data" in result and not result.get("errors"):
        response.headers["Cache-Control"] = f"public, max-age={PUBLIC_MAX_AGE}"
