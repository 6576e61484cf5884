"""GraphQL over HTTP as clients meet it: the two response media types and their status codes,
queries over GET and what caches may keep of them, the published SDL, and which browser
origins may call the API (real CORS preflights through the app).

tests/test_http_server.py runs the spec's reference audit against the production server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from common.settings import ConfigError, Settings
from tests.factories import row_counts

ROOT = Path(__file__).resolve().parent.parent
JSON = "application/json"
MODERN = "application/graphql-response+json"
ME = "{ me { id } }"
CREATE = "mutation { createOrder(input: {price: 10.0}) { success order { id } } }"
SHOP = "https://shop.example.com"
# Documents the service reads but does not execute: a syntax error, an unknown field, a
# variable of the wrong type, and one nested past the depth limit.
REQUEST_ERRORS = {
    "syntax": ({"query": "{"}, "GRAPHQL_PARSE_FAILED"),
    "validation": ({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED"),
    "coercion": (
        {"query": "query($id: ID!) { order(id: $id) { id } }", "variables": {"id": None}},
        "BAD_USER_INPUT",
    ),
    "limit": (
        {
            "query": "{ me { orders(first: 1) { nodes { customer { orders(first: 1) { nodes {"
            " customer { orders(first: 1) { nodes { customer { id } } } } } } } } } } }"
        },
        "QUERY_TOO_DEEP",
    ),
    "operation": (
        {"query": "query A { me { id } }", "operationName": "B"},
        "OPERATION_RESOLUTION_FAILURE",
    ),
}


@pytest.fixture
def client(app: Flask, session):
    return app.test_client()


@pytest.fixture
def legacy(app: Flask, session):
    """A client that sends no Accept header at all, as older clients do."""
    client = app.test_client()
    client.environ_base.pop("HTTP_ACCEPT")
    return client


@pytest.fixture
def bearer(idp) -> dict[str, str]:
    return {"Authorization": f"Bearer {idp.issue_access_token('jane')}"}


def codes_of(body: dict) -> list[str | None]:
    return [error.get("extensions", {}).get("code") for error in body["errors"]]


# -- media types and status codes -----------------------------------------------------------


@pytest.mark.parametrize("case", REQUEST_ERRORS, ids=str)
@pytest.mark.parametrize("accept", [JSON, None])
def test_a_request_error_is_200_to_a_client_that_takes_only_json(client, legacy, case, accept):
    body, code = REQUEST_ERRORS[case]
    if accept:
        response = client.post("/graphql", json=body, headers={"Accept": accept})
    else:
        response = legacy.post("/graphql", json=body)

    # Only a 200 tells such a client that the body is ours, not a proxy's.
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    answer = response.get_json()
    assert "data" not in answer
    assert codes_of(answer) == [code]


@pytest.mark.parametrize("case", REQUEST_ERRORS, ids=str)
def test_a_request_error_is_400_in_the_graphql_response_media_type(client, case):
    body, code = REQUEST_ERRORS[case]
    response = client.post("/graphql", json=body, headers={"Accept": MODERN})

    assert response.status_code == 400
    assert response.headers["Content-Type"] == f"{MODERN}; charset=utf-8"
    assert "data" not in response.get_json()
    assert codes_of(response.get_json()) == [code]


@pytest.mark.parametrize("accept", [JSON, MODERN])
def test_a_field_error_is_a_partial_answer_with_200_in_either_media_type(client, accept):
    response = client.post("/graphql", json={"query": ME}, headers={"Accept": accept})

    assert response.status_code == 200
    assert response.get_json()["data"] == {"me": None}
    assert codes_of(response.get_json()) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (f"{MODERN}, {JSON}", MODERN),
        (f"{JSON}, {MODERN}", JSON),  # a tie: the first it lists
        (f"{JSON};q=0.5, {MODERN}", MODERN),
        (f"{MODERN};q=0.9, {JSON}", JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        (f"text/html, {MODERN}; charset=utf-8", MODERN),
    ],
)
def test_the_answer_is_in_the_media_type_the_client_prefers(client, accept, media):
    response = client.post("/graphql", json={"query": "{ __typename }"}, headers={"Accept": accept})

    assert response.status_code == 200
    assert response.mimetype == media


@pytest.mark.parametrize("accept", ["text/html", "application/xml", f"{MODERN};q=0"])
def test_a_client_that_takes_neither_media_type_gets_406(client, accept):
    response = client.post("/graphql", json={"query": "{ __typename }"}, headers={"Accept": accept})

    assert response.status_code == 406
    assert codes_of(response.get_json()) == ["NOT_ACCEPTABLE"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": 7}, "The body must be an object with a 'query' string."),
        ({"variables": {}}, "The body must be an object with a 'query' string."),
        ({"query": ME, "operationName": 0}, "The 'operationName' parameter must be a string."),
        ({"query": ME, "variables": "{}"}, "The 'variables' parameter must be an object."),
        ({"query": ME, "variables": [1]}, "The 'variables' parameter must be an object."),
        ({"query": ME, "extensions": False}, "The 'extensions' parameter must be an object."),
    ],
)
@pytest.mark.parametrize("accept", [JSON, MODERN])
def test_a_request_that_is_not_a_graphql_request_is_400_in_either_media_type(
    client, body, message, accept
):
    response = client.post("/graphql", json=body, headers={"Accept": accept})

    assert response.status_code == 400
    assert response.mimetype == accept
    assert response.get_json()["errors"] == [
        {"message": message, "extensions": {"code": "BAD_REQUEST"}}
    ]


def test_null_parameters_are_as_good_as_none(client):
    body = {"query": "{ __typename }", "operationName": None, "variables": None, "extensions": None}
    response = client.post("/graphql", json=body)

    assert response.status_code == 200
    assert response.get_json() == {"data": {"__typename": "Query"}}


# -- GET --------------------------------------------------------------------------------------


def test_a_query_over_get_answers_with_its_variables(client, bearer):
    args = {
        "query": "query Mine($first: Int) { myOrders(first: $first) { id } me { id } }",
        "variables": json.dumps({"first": 1}),
        "operationName": "Mine",
    }
    response = client.get("/graphql", query_string=args, headers=bearer)

    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["myOrders"] == []
    assert data["me"]["id"]
    # The caller's own data: its browser may keep it, asking again each time; no shared cache.
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert {"Accept", "Authorization", "Origin"} <= set(response.vary)


@pytest.mark.parametrize(
    ("args", "operation"),
    [
        ({"query": CREATE}, "the only operation"),
        (
            {
                "query": f"query Read {ME} {CREATE.replace('mutation', 'mutation Write')}",
                "operationName": "Write",
            },
            "the one named",
        ),
    ],
)
def test_a_mutation_over_get_is_405_and_changes_nothing(client, bearer, session, args, operation):
    client.post("/graphql", json={"query": ME}, headers=bearer)  # jane's record, first seen
    before = row_counts(session)
    response = client.get("/graphql", query_string=args, headers=bearer)

    assert response.status_code == 405, operation
    assert response.headers["Allow"] == "POST"
    assert codes_of(response.get_json()) == ["METHOD_NOT_ALLOWED"]
    assert row_counts(session) == before


def test_a_mutation_over_head_is_405_too(client, bearer, session):
    client.post("/graphql", json={"query": ME}, headers=bearer)
    before = row_counts(session)
    response = client.head("/graphql", query_string={"query": CREATE}, headers=bearer)

    assert response.status_code == 405
    assert row_counts(session) == before


def test_a_get_may_run_the_query_of_a_document_that_also_holds_a_mutation(client, bearer):
    args = {
        "query": f"query Read {ME} {CREATE.replace('mutation', 'mutation Write')}",
        "operationName": "Read",
    }
    response = client.get("/graphql", query_string=args, headers=bearer)

    assert response.status_code == 200
    assert response.get_json()["data"]["me"]["id"]


def test_an_anonymous_get_that_failed_is_kept_in_no_cache(client):
    response = client.get("/graphql", query_string={"query": ME})

    assert response.status_code == 200
    assert codes_of(response.get_json()) == ["UNAUTHENTICATED"]
    assert response.headers["Cache-Control"] == "no-store"


def test_an_anonymous_get_that_succeeded_may_be_cached_for_a_minute(client):
    response = client.get("/graphql", query_string={"query": "{ __typename }"})

    assert response.get_json() == {"data": {"__typename": "Query"}}
    assert response.headers["Cache-Control"] == "public, max-age=60"
    assert {"Accept", "Authorization", "Origin"} <= set(response.vary)


def test_a_get_with_an_invalid_token_is_401(client):
    response = client.get(
        "/graphql", query_string={"query": ME}, headers={"Authorization": "Bearer junk"}
    )

    assert response.status_code == 401
    assert codes_of(response.get_json()) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "Give the query in the URL's 'query' parameter."),
        ({"query": ME, "variables": "{"}, "The 'variables' parameter must be a JSON object."),
        ({"query": ME, "variables": "[1]"}, "The 'variables' parameter must be an object."),
        ({"query": ME, "extensions": "1"}, "The 'extensions' parameter must be an object."),
    ],
)
def test_a_get_that_is_not_a_graphql_request_is_400(client, args, message):
    response = client.get("/graphql", query_string=args, headers={"Accept": JSON})

    assert response.status_code == 400
    assert response.get_json()["errors"][0]["message"] == message


def test_an_empty_operation_name_in_a_get_is_none(client):
    args = {"query": "{ __typename }", "operationName": ""}
    response = client.get("/graphql", query_string=args)

    assert response.get_json() == {"data": {"__typename": "Query"}}


# -- the SDL ----------------------------------------------------------------------------------


def test_production_publishes_the_schema_as_sdl(production_app):
    client = production_app.test_client()
    response = client.get("/graphql/schema.graphql")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.get_data(as_text=True) == (ROOT / "schema.graphql").read_text()
    assert response.headers["Cache-Control"] == "public, no-cache"
    again = client.get(
        "/graphql/schema.graphql", headers={"If-None-Match": response.headers["ETag"]}
    )
    assert again.status_code == 304
    # Reading the schema this way is no reason to let introspection run.
    refused = client.post("/graphql", json={"query": "{ __schema { types { name } } }"})
    assert "introspection is disabled" in refused.get_json()["errors"][0]["message"]


def test_the_sdl_is_not_published_when_the_setting_is_off(make_app):
    hidden = make_app(env="production", secret_key="x" * 40, schema_sdl_public=False)
    response = hidden.test_client().get("/graphql/schema.graphql")

    assert response.status_code == 404
    assert "type Query" not in response.get_data(as_text=True)


# -- CORS ------------------------------------------------------------------------------------


def preflight(client, origin: str, method: str = "POST", path: str = "/graphql"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def cors_headers(response) -> dict[str, str]:
    return {
        name: value for name, value in response.headers if name.lower().startswith("access-control")
    }


@pytest.fixture
def shop_app(make_app) -> Flask:
    return make_app(env="production", secret_key="x" * 40, cors_origins=(SHOP,))


def varies_on(response) -> set[str]:
    """The request headers `response` varies on, from its one Vary header."""
    [vary] = response.headers.getlist("Vary")
    return {name.strip().lower() for name in vary.split(",")}


def test_a_preflight_from_an_allowed_origin_is_answered(shop_app):
    response = preflight(shop_app.test_client(), SHOP)

    assert response.status_code == 204
    assert "Content-Type" not in response.headers
    assert response.get_data() == b""
    assert "origin" in varies_on(response)
    headers = cors_headers(response)
    assert headers["Access-Control-Allow-Origin"] == SHOP
    allowed = {name.strip().lower() for name in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert {"GET", "POST"} <= set(headers["Access-Control-Allow-Methods"].split(", "))
    assert headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in headers  # tokens, never cookies


def test_an_allowed_origin_may_read_the_answer(shop_app, idp, session):
    token = idp.issue_access_token("jane")
    response = shop_app.test_client().post(
        "/graphql",
        json={"query": ME},
        headers={"Origin": SHOP, "Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 200
    assert response.get_json()["data"]["me"]["id"]
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert response.headers["Access-Control-Expose-Headers"] == "X-Request-ID"


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "http://shop.example.com", f"{SHOP}.evil.example"]
)
def test_another_origin_gets_no_cors_headers(shop_app, origin, session):
    client = shop_app.test_client()

    assert cors_headers(preflight(client, origin)) == {}
    answer = client.post("/graphql", json={"query": "{ __typename }"}, headers={"Origin": origin})
    assert cors_headers(answer) == {}


@pytest.mark.parametrize("origin", ["https://evil.example.com", None])
def test_any_other_preflight_is_answered_with_no_content_and_no_cors_headers(shop_app, origin):
    client = shop_app.test_client()
    response = preflight(client, origin) if origin else client.options("/graphql")

    assert response.status_code == 204
    assert "Content-Type" not in response.headers
    assert response.get_data() == b""
    assert cors_headers(response) == {}
    # A cache may keep a preflight's answer: the allowed origin's must not be served here.
    assert "origin" in varies_on(response)


def test_production_allows_no_origin_unless_told(production_app):
    client = production_app.test_client()

    assert cors_headers(preflight(client, "http://localhost:3000")) == {}
    answer = preflight(client, SHOP)
    assert cors_headers(answer) == {}
    assert answer.status_code == 204
    assert "Content-Type" not in answer.headers


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:3000", True),
        ("http://127.0.0.1:5173", True),
        ("http://[::1]:8080", True),
        ("https://localhost", True),
        ("http://localhost.evil.example", False),
        (SHOP, False),
    ],
)
def test_development_allows_pages_served_from_this_machine(app, origin, allowed):
    headers = cors_headers(preflight(app.test_client(), origin))

    assert (headers.get("Access-Control-Allow-Origin") == origin) is allowed


@pytest.mark.parametrize("origin", [SHOP, "https://evil.example.com", None])
def test_the_sdl_varies_on_origin_for_the_caches_that_keep_it(shop_app, origin):
    headers = {"Origin": origin} if origin else {}
    response = shop_app.test_client().get("/graphql/schema.graphql", headers=headers)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, no-cache"
    # Only the shop's page may read it: a shared cache must not give the shop's answer, with
    # its Access-Control-Allow-Origin, to another page, nor another's to the shop.
    assert ("Access-Control-Allow-Origin" in response.headers) is (origin == SHOP)
    assert "origin" in varies_on(response)


def test_a_cacheable_get_names_each_header_it_varies_on_once(shop_app):
    response = shop_app.test_client().get(
        "/graphql", query_string={"query": "{ __typename }"}, headers={"Origin": SHOP}
    )

    assert response.headers["Cache-Control"] == "public, max-age=60"
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert varies_on(response) == {"accept", "authorization", "origin"}


def test_a_preflight_to_no_such_path_is_still_not_found(shop_app):
    response = preflight(shop_app.test_client(), SHOP, path="/graphql/nowhere")

    assert response.status_code == 404


def test_cors_covers_the_endpoint_only(shop_app):
    response = shop_app.test_client().get("/healthz", headers={"Origin": SHOP})

    assert cors_headers(response) == {}


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("https://shop.example.com", (SHOP,)),
        (" https://shop.example.com/ , http://localhost:3000", (SHOP, "http://localhost:3000")),
        (",", ()),
    ],
)
def test_cors_origins_are_read_from_the_environment(value, origins):
    assert Settings.from_env({"CORS_ORIGINS": value}).cors_origins == origins


@pytest.mark.parametrize(
    "value", ["*", "shop.example.com", "https://shop.example.com/app", "ftp://shop.example.com"]
)
def test_a_cors_origin_that_is_no_origin_stops_the_service(value):
    with pytest.raises(ConfigError, match="CORS_ORIGINS is malformed"):
        Settings.from_env({"CORS_ORIGINS": value})


@pytest.mark.parametrize(("value", "public"), [("off", False), ("False", False), ("1", True)])
def test_schema_sdl_public_is_read_from_the_environment(value, public):
    assert Settings.from_env({"SCHEMA_SDL_PUBLIC": value}).schema_sdl_public is public


def test_schema_sdl_public_must_be_a_yes_or_a_no():
    with pytest.raises(ConfigError, match="SCHEMA_SDL_PUBLIC is malformed"):
        Settings.from_env({"SCHEMA_SDL_PUBLIC": "maybe"})
