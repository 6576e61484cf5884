"""The endpoint's protections in production (no introspection, GraphiQL, suggestions or stack
traces; depth, cost, token and body limits; no batching) and its HTTP answers."""

from __future__ import annotations

import json

import pytest

from tests.clients import GraphQLClient
from tests.factories import row_counts


@pytest.fixture
def prod(production_app, session, idp) -> GraphQLClient:
    """Jane on the production-mode app; `session` keeps its writes inside the test."""
    return GraphQLClient(production_app.test_client(), idp.issue_access_token("jane"))


def errors_of(response) -> list[dict]:
    return response.get_json()["errors"]


def messages_of(response) -> str:
    return " ".join(error["message"] for error in errors_of(response))


def nested(levels: int) -> str:
    """A query `levels` fields deep: me { orders { nodes { customer { orders ... { id } } } } }."""
    assert levels % 3 != 0, "an OrderConnection would need two more levels to end in a scalar"
    cycle = ["orders(first: 1)", "nodes", "customer"]
    fields = ["me"]
    while len(fields) < levels - 1:
        fields.append(cycle[(len(fields) - 1) % 3])
    return "{ " + " { ".join([*fields, "id"]) + " }" * len(fields) + " }"


def depth_of(document: str) -> int:
    """How many fields deep `document` is: its deepest brace, as only leaves have none."""
    deepest = level = 0
    for char in document:
        level += char == "{"
        level -= char == "}"
        deepest = max(deepest, level)
    return deepest


# --- introspection, GraphiQL, suggestions, stack traces ------------------------------------


def test_production_refuses_introspection(prod):
    response = prod.post("{ __schema { types { name } } }")

    assert response.status_code == 400
    assert messages_of(response) == (
        "Cannot query '__schema': introspection is disabled. "
        "The schema is published at /graphql/schema.graphql."
    )
    assert "data" not in response.get_json()


def test_production_finds_no_type_by_name(prod):
    # A lookup says nothing of the schema: an existing type is as absent as a made-up one.
    for name in ("Order", "NoSuchType"):
        response = prod.post(
            "query($name: String!) { __type(name: $name) { fields { name } } me { __typename } }",
            {"name": name},
        )

        assert response.status_code == 200
        assert response.get_json() == {"data": {"__type": None, "me": {"__typename": "Customer"}}}


def test_production_names_no_sdl_when_it_is_not_published(production_app, make_app, session):
    settings = production_app.config["SETTINGS"]
    hidden = make_app(env="production", secret_key=settings.secret_key, schema_sdl_public=False)
    response = hidden.test_client().post(
        "/graphql", json={"query": "{ __schema { types { name } } }"}
    )

    assert response.status_code == 400
    assert messages_of(response) == "Cannot query '__schema': introspection is disabled."


def test_development_allows_introspection(jane):
    types = jane.execute("{ __schema { types { name } } }")["__schema"]["types"]

    assert {"Order", "Customer", "Money"} <= {t["name"] for t in types}


def test_typename_still_works_in_production(prod):
    response = prod.post("{ me { __typename } }")

    assert response.get_json() == {"data": {"me": {"__typename": "Customer"}}}


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("path", ["/graphql", "/graphql/"])
@pytest.mark.parametrize(("accept", "status"), [("text/html", 406), (BROWSER_ACCEPT, 400)])
def test_production_serves_no_graphiql(production_app, path, accept, status):
    response = production_app.test_client().get(path, headers={"Accept": accept})

    # A page only: nothing it takes (406); a browser's, which takes anything: no query (400).
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert "graphiql" not in response.get_data(as_text=True).lower()


@pytest.mark.parametrize("path", ["/graphql", "/graphql/"])
def test_development_serves_graphiql(app, path):
    response = app.test_client().get(path, headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "graphiql" in response.get_data(as_text=True).lower()


MISSPELLED = {
    "field": ("{ me { nmae } }", {}),
    "argument": ("{ allOrders(frist: 2) { id } }", {}),
    "type": ("query($n: Itn) { allOrders(first: $n) { id } }", {}),
    "input field": (
        "mutation($i: CreateOrderInput!) { createOrder(input: $i) { success } }",
        {"i": {"unitPrise": "10"}},
    ),
}


@pytest.mark.parametrize("kind", list(MISSPELLED))
def test_production_gives_no_suggestions(prod, jane, kind):
    document, variables = MISSPELLED[kind]

    response = prod.post(document, variables)

    assert response.status_code in (200, 400)
    assert errors_of(response)
    assert "Did you mean" not in response.get_data(as_text=True)
    assert "Did you mean" in jane.post(document, variables).get_data(as_text=True)


def test_production_errors_carry_no_stack_trace(prod):
    response = prod.post('mutation { createOrder(input: {price: "abc"}) { success } }')

    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Traceback" not in body
    assert ".py" not in body
    assert all("exception" not in error.get("extensions", {}) for error in errors_of(response))


def test_production_explains_a_bad_decimal_literal(prod):
    response = prod.post('mutation { createOrder(input: {price: "abc"}) { success } }')

    assert response.status_code == 400
    assert "Internal server error" not in messages_of(response)
    assert "'abc' is not a decimal number" in messages_of(response)


# --- depth, cost and size limits ------------------------------------------------------------


def test_nested_helper_builds_the_depth_it_names():
    assert depth_of("{ me { id } }") == 2
    assert [depth_of(nested(levels)) for levels in (10, 11, 13)] == [10, 11, 13]


def test_production_accepts_ten_levels(prod):
    response = prod.post(nested(10))

    assert response.status_code == 200
    assert "errors" not in response.get_json()


@pytest.mark.parametrize("levels", [11, 13])
def test_production_refuses_more_than_ten_levels(prod, levels):
    response = prod.post(nested(levels))

    assert response.status_code == 400
    [error] = errors_of(response)
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"
    assert error["message"] == f"The operation is nested {levels} levels deep; the limit is 10."


def test_depth_counts_through_fragments(prod):
    document = nested(11).replace("{ me {", "{ ...Me } fragment Me on Query { me {", 1)

    response = prod.post(document)

    assert response.status_code == 400
    assert errors_of(response)[0]["extensions"]["code"] == "QUERY_TOO_DEEP"


COSTLY = """query($n: Int) {
  allOrders(first: $n) { customer { orders(first: $n) { nodes { id } } } }
}"""


def test_cost_limit_reads_the_requests_variables(prod):
    refused = prod.post(COSTLY, {"n": 100})
    accepted = prod.post(COSTLY, {"n": 2})

    assert refused.status_code == 400
    [error] = errors_of(refused)
    assert error["message"].startswith("The query exceeds the maximum cost of 5000.")
    assert error["extensions"]["cost"]["requestedQueryCost"] > 5000
    assert accepted.status_code == 200
    assert accepted.get_json() == {"data": {"allOrders": []}}


def test_cost_limit_judges_each_request_of_one_document_by_its_own_variables(prod):
    answers = [prod.post(COSTLY, {"n": n}).status_code for n in (2, 100, 2, "100", 2)]

    assert answers == [200, 400, 200, 400, 200]


def test_a_missing_variable_is_refused_alike_before_and_after_the_document_ran(prod):
    document = "mutation($id: ID!) { confirmOrder(orderId: $id) { success } }"
    before = prod.post(document)
    ran = prod.post(document, {"id": "not-an-order"})
    after = prod.post(document)

    assert ran.status_code == 200
    assert (after.status_code, after.get_json()) == (before.status_code, before.get_json())
    assert "$id" in messages_of(after)


def test_cost_limit_refuses_large_literal_page_sizes(prod):
    response = prod.post(COSTLY.replace("$n", "100").replace("query(100: Int)", "query"))

    assert response.status_code == 400
    assert "maximum cost" in messages_of(response)


def test_cost_limit_counts_a_variables_default_value(prod):
    response = prod.post(COSTLY.replace("$n: Int", "$n: Int = 100"))

    assert response.status_code == 400
    assert "maximum cost" in messages_of(response)


def test_production_refuses_a_document_over_800_tokens(prod):
    response = prod.post("{ me { " + "id " * 800 + "} }")

    assert response.status_code == 400
    assert "more than 800 tokens" in messages_of(response)


def test_production_accepts_a_document_just_under_800_tokens(prod):
    # 10 tokens a field (`aN : id @ include ( if : true )`): 786 in all, 79 fields.
    aliases = " ".join(f"a{n}: id @include(if: true)" for n in range(78))

    response = prod.post("{ me { " + aliases + " } }")

    assert response.status_code == 200
    assert "errors" not in response.get_json()


def test_a_body_over_64_kib_is_too_large(prod, session):
    before = row_counts(session)
    padding = "# " + "x" * (64 * 1024) + "\n"

    response = prod.post(padding + 'mutation { createOrder(input: {price: "1"}) { success } }')

    assert response.status_code == 413
    assert errors_of(response)[0]["extensions"]["code"] == "REQUEST_ENTITY_TOO_LARGE"
    assert row_counts(session) == before


def test_a_body_just_under_64_kib_is_served(prod):
    response = prod.post("# " + "x" * (60 * 1024) + "\n{ me { id } }")

    assert response.status_code == 200
    assert "errors" not in response.get_json()


# --- HTTP shapes ----------------------------------------------------------------------------


def raw_post(client: GraphQLClient, data: str | bytes, content_type: str):
    return client.client.post(
        "/graphql",
        data=data,
        content_type=content_type,
        headers={"Authorization": f"Bearer {client.token}"},
    )


@pytest.mark.parametrize(
    ("data", "content_type", "status", "message"),
    [
        (
            json.dumps([{"query": "{ me { id } }"}]),
            "application/json",
            400,
            "Batched requests are not supported.",
        ),
        ("{not json", "application/json", 400, "The request body is not valid JSON."),
        (b"\xff\xfe", "application/json", 400, "The request body is not valid JSON."),
        (
            '{"query": 5}',
            "application/json",
            400,
            "The body must be an object with a 'query' string.",
        ),
        (
            '"{ me { id } }"',
            "application/json",
            400,
            "The body must be an object with a 'query' string.",
        ),
        (
            '{"query": "{ me { id } }"}',
            "text/plain",
            415,
            "Send the request as JSON (Content-Type: application/json).",
        ),
        (
            "query=%7B+me+%7B+id+%7D+%7D",
            "application/x-www-form-urlencoded",
            415,
            "Send the request as JSON (Content-Type: application/json).",
        ),
        (
            "{ me { id } }",
            "application/graphql",
            415,
            "Send the request as JSON (Content-Type: application/json).",
        ),
        (
            '--b\r\nContent-Disposition: form-data; name="query"\r\n\r\n{ me { id } }\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            415,
            "Send the request as JSON (Content-Type: application/json).",
        ),
    ],
    ids=[
        "batch",
        "invalid-json",
        "not-utf8",
        "query-not-string",
        "bare-string",
        "text",
        "form",
        "graphql-document",
        "multipart-form",
    ],
)
def test_protocol_errors(prod, session, data, content_type, status, message):
    before = row_counts(session)

    response = raw_post(prod, data, content_type)

    assert response.status_code == status
    assert response.get_json() == {
        "errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]
    }
    assert row_counts(session) == before


def test_a_batch_of_mutations_writes_nothing(prod, session):
    prod.post("{ me { id } }")
    before = row_counts(session)
    batch = [{"query": 'mutation { createOrder(input: {price: "5"}) { success } }'}] * 2

    response = raw_post(prod, json.dumps(batch), "application/json")

    assert response.status_code == 400
    assert row_counts(session) == before


def test_json_with_a_charset_is_accepted(prod):
    response = raw_post(prod, '{"query": "{ me { id } }"}', "application/json; charset=utf-8")

    assert response.status_code == 200


def test_an_executed_operation_with_field_errors_answers_200(prod):
    response = prod.post('{ me { id } order(id: "not-a-uuid") { id } }')

    assert response.status_code == 200
    body = response.get_json()
    assert body["data"]["me"]["id"]
    assert body["data"]["order"] is None
    assert errors_of(response)[0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_a_refused_mutation_answers_200_with_its_payload(prod):
    response = prod.post('mutation { confirmOrder(orderId: "nope") { success } }')

    assert response.status_code == 200
    assert response.get_json() == {"data": {"confirmOrder": {"success": False}}}


def test_without_a_token_fields_answer_unauthenticated_with_200(production_app):
    response = production_app.test_client().post("/graphql", json={"query": "{ me { id } }"})

    assert response.status_code == 200
    body = response.get_json()
    assert body["data"] == {"me": None}
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_syntax_error_answers_400(prod):
    response = prod.post("{ me { id }")

    assert response.status_code == 400
    assert messages_of(response).startswith("Syntax Error")


def test_a_document_selecting_too_many_fields_is_refused_before_validation(prod):
    response = prod.post("{ me { " + " ".join(f"a{n}: id" for n in range(260)) + " } }")

    assert response.status_code == 400
    assert messages_of(response) == (
        "The document selects 261 fields once its fragments are expanded; the limit is 250."
    )
