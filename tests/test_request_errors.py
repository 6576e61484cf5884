"""Every request error (a request read but never executed) says what went wrong in
`extensions.code`, with Apollo Server's well-known codes where there is one, so a client can
branch on the code instead of the message: GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED,
BAD_USER_INPUT for variables that do not fit, OPERATION_RESOLUTION_FAILURE when no operation
can be picked; the limits keep their own QUERY_TOO_* codes."""

from __future__ import annotations

import pytest

from tests.conftest import RECOMMENDED_ACCEPT

JSON = "application/json"
MODERN = "application/graphql-response+json"
ORDER = "query($id: ID!) { order(id: $id) { id } }"
PLACE = "mutation($p: Decimal!) { createOrder(input: {unitPrice: $p}) { success } }"
REQUEST_ERRORS = {
    "syntax": ({"query": "{ me { id }"}, "GRAPHQL_PARSE_FAILED"),
    "syntax-bad-character": ({"query": "{ me { id } } !"}, "GRAPHQL_PARSE_FAILED"),
    "unknown-field": ({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED"),
    "unknown-argument": ({"query": "{ me { id(x: 1) } }"}, "GRAPHQL_VALIDATION_FAILED"),
    # The Decimal scalar names its own refusal, written in the query or sent as a variable.
    "literal-not-a-decimal": (
        {"query": 'mutation { createOrder(input: {unitPrice: "abc"}) { success } }'},
        "BAD_USER_INPUT",
    ),
    "unused-fragment": (
        {"query": "fragment F on Query { __typename }"},
        "GRAPHQL_VALIDATION_FAILED",
    ),
    "subscription": ({"query": "subscription { me { id } }"}, "GRAPHQL_VALIDATION_FAILED"),
    "variable-not-a-decimal": (
        {"query": PLACE, "variables": {"p": "abc"}},
        "BAD_USER_INPUT",
    ),
    "variable-missing": ({"query": ORDER}, "BAD_USER_INPUT"),
    "variable-null": ({"query": ORDER, "variables": {"id": None}}, "BAD_USER_INPUT"),
    "variable-of-another-type": (
        {"query": "query($n: Int) { orders(first: $n) { nodes { id } } }", "variables": {"n": "x"}},
        "BAD_USER_INPUT",
    ),
    "unknown-operation": (
        {"query": "query A { me { id } }", "operationName": "B"},
        "OPERATION_RESOLUTION_FAILURE",
    ),
    "ambiguous-operation": (
        {"query": "query A { me { id } } query B { me { id } }"},
        "OPERATION_RESOLUTION_FAILURE",
    ),
    "over-the-token-limit": ({"query": "{ me { " + "id " * 800 + "} }"}, "QUERY_TOO_LARGE"),
    "nested-too-deep": ({"query": "{ me " + "{ id " * 30 + "}" * 31}, "QUERY_TOO_DEEP"),
}


@pytest.fixture
def client(app, session):
    return app.test_client()


def codes_of(body: dict) -> list[str | None]:
    return [error.get("extensions", {}).get("code") for error in body["errors"]]


@pytest.mark.parametrize("case", list(REQUEST_ERRORS))
@pytest.mark.parametrize(("accept", "status"), [(RECOMMENDED_ACCEPT, 400), (JSON, 200)])
def test_each_request_error_names_its_code(client, case, accept, status):
    body, code = REQUEST_ERRORS[case]

    response = client.post("/graphql", json=body, headers={"Accept": accept})

    assert response.status_code == status
    answer = response.get_json()
    assert "data" not in answer
    assert answer["errors"]
    assert set(codes_of(answer)) == {code}


def test_every_one_of_many_validation_errors_has_the_code(client):
    fields = " ".join(f"a{n}: nope{n}" for n in range(30))

    answer = client.post("/graphql", json={"query": "{ " + fields + " }"}).get_json()

    # Validation stops after 20 errors and says so, in an error of the same kind.
    assert len(answer["errors"]) == 21
    assert set(codes_of(answer)) == {"GRAPHQL_VALIDATION_FAILED"}


def test_a_variable_error_keeps_its_message_and_location(client):
    body, _ = REQUEST_ERRORS["variable-not-a-decimal"]

    [error] = client.post("/graphql", json=body).get_json()["errors"]

    assert error["message"].startswith("Variable '$p' got invalid value 'abc'")
    assert error["locations"] == [{"line": 1, "column": 10}]


def test_production_refuses_introspection_with_the_validation_code(production_app):
    response = production_app.test_client().post(
        "/graphql", json={"query": "{ __schema { types { name } } }"}
    )

    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["extensions"] == {
        "code": "GRAPHQL_VALIDATION_FAILED",
        "validationErrorCode": "INTROSPECTION_DISABLED",
    }
    assert "introspection is disabled" in error["message"]


def test_a_refused_document_is_refused_with_its_code_again_from_the_cache(client):
    body, code = REQUEST_ERRORS["unknown-field"]

    first = client.post("/graphql", json=body).get_json()
    again = client.post("/graphql", json=body).get_json()

    assert codes_of(first) == codes_of(again) == [code]
