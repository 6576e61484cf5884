"""A stranger's small document must not buy a worker's time: every GraphQL document is
refused or answered after checks linear in its size (web/document_limits.py), sent here
without any token to the production-mode service.

Speed itself is measured in the benchmark (bench/documents.py); these tests pin what a client
sees: which documents are refused, with which code and message, and that the refusal comes
from measuring the document, never from walking its expansion.
"""

from __future__ import annotations

import pytest
from graphql import get_introspection_query

from tests.factories import row_counts


@pytest.fixture
def stranger(production_app):
    """No token, production mode."""
    client = production_app.test_client()

    def post(query: str, variables: dict | None = None):
        return client.post("/graphql", json={"query": query, "variables": variables or {}})

    return post


def refusal(response) -> dict:
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert "data" not in body
    [error] = body["errors"]
    return error


def fanout(levels: int) -> str:
    """A document in which each fragment spreads the next one twice: 2**levels fields."""
    fragments = " ".join(
        f"fragment F{i} on Customer {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    return f"{{ me {{ ...F0 }} }} {fragments} fragment F{levels} on Customer {{ id }}"


def test_a_kilobyte_of_fragments_that_each_spread_the_next_twice_is_refused(stranger, session):
    before = row_counts(session)
    document = fanout(31)
    assert len(document) < 1400

    error = refusal(stranger(document))

    # 2**31 copies of `id` plus `me`: counted fragment by fragment, never walked.
    assert error["message"] == (
        "The document selects 2147483649 fields once its fragments are expanded; the limit is 250."
    )
    assert error["extensions"]["code"] == "QUERY_TOO_LARGE"
    assert row_counts(session) == before


def test_spreads_are_counted_each_time_they_appear(stranger):
    fields = " ".join(f"a{n}: id" for n in range(100))
    fragment = f"fragment Many on Customer {{ {fields} }}"

    twice = stranger(f"{{ me {{ ...Many }} x: me {{ ...Many }} }} {fragment}")
    thrice = stranger(f"{{ me {{ ...Many }} x: me {{ ...Many }} y: me {{ ...Many }} }} {fragment}")

    assert twice.status_code == 200  # 202 fields: validated, then refused for want of a token
    assert twice.get_json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert refusal(thrice)["message"] == (
        "The document selects 303 fields once its fragments are expanded; the limit is 250."
    )


def test_depth_through_a_chain_of_fragments_is_measured_once_per_fragment(stranger):
    # Each fragment adds one level: `me` then ten levels of `orders`/`customer`.
    links = []
    for i in range(6):
        links.append(f"fragment C{i} on Customer {{ orders(first: 1) {{ nodes {{ ...O{i} }} }} }}")
        links.append(f"fragment O{i} on Order {{ customer {{ ...C{i + 1} }} }}")
    links.append("fragment C6 on Customer { id }")

    error = refusal(stranger("{ me { ...C0 } } " + " ".join(links)))

    assert error["message"] == "The operation is nested 20 levels deep; the limit is 10."
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"


def test_fragments_that_spread_each_other_are_refused_by_validation(stranger):
    error = refusal(
        stranger(
            "{ me { ...A } } fragment A on Customer { id ...B } fragment B on Customer { ...A }"
        )
    )

    assert error["message"] == "Cannot spread fragment 'A' within itself via 'B'."


@pytest.mark.parametrize(
    "document",
    [
        "{" + "me {" * 250 + "id" + "}" * 251,
        '{ customerByCode(code: "x", extra: ' + "[" * 380 + "]" * 380 + ") { id } }",
    ],
    ids=["selections", "list-values"],
)
def test_brackets_nested_deeper_than_the_parser_can_follow_are_a_clear_refusal(stranger, document):
    error = refusal(stranger(document))

    assert error["message"] == "The document nests brackets more than 28 deep."
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            " ".join(f"query Q{i} {{ me {{ id }} }}" for i in range(17)),
            "The document holds 17 operations; the limit is 16.",
        ),
        (
            "{ me { id } } " + " ".join(f"fragment F{i} on Customer {{ id }}" for i in range(33)),
            "The document holds 33 fragments; the limit is 32.",
        ),
    ],
    ids=["operations", "fragments"],
)
def test_documents_of_many_operations_or_fragments_are_refused(stranger, document, message):
    error = refusal(stranger(document))

    assert error["message"] == message
    assert error["extensions"]["code"] == "QUERY_TOO_LARGE"


def test_one_field_selected_over_and_over_is_refused_before_pairwise_comparison(stranger):
    # 33 copies of `id`: 528 pairs for field merging to compare; 32 copies make 496.
    many = stranger("{ me { " + "id " * 33 + "} }")
    fewer = stranger("{ me { " + "id " * 32 + "} }")

    error = refusal(many)
    assert error["extensions"]["code"] == "QUERY_TOO_LARGE"
    assert "compare 528 pairs" in error["message"]
    assert fewer.status_code == 200
    assert fewer.get_json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_same_named_selections_from_fragments_count_toward_the_pairs(stranger):
    fragments = " ".join(f"fragment F{i} on Customer {{ id }}" for i in range(21))
    spreads = " ".join(f"...F{i}" for i in range(21))
    direct = "id " * 12

    error = refusal(stranger(f"{{ me {{ {spreads} {direct} }} }} {fragments}"))

    assert "compare 528 pairs" in error["message"]  # 33 selections of `id`


def test_validation_reports_at_most_twenty_errors(stranger):
    response = stranger("{ me { " + " ".join(f"nope{i}" for i in range(200)) + " } }")

    body = response.get_json()
    assert response.status_code == 400
    assert len(body["errors"]) == 21  # twenty, then "Too many validation errors"
    assert body["errors"][-1]["message"].startswith("Too many validation errors")


def test_a_legitimate_document_with_fragments_is_served(production_app, session, idp):
    token = idp.issue_access_token("jane")
    document = (
        "query Mine { me { ...Who orders(first: 5) { nodes { ...Line } } } } "
        "fragment Who on Customer { id code name } "
        "fragment Line on Order { id status total { amount currency } }"
    )

    response = production_app.test_client().post(
        "/graphql", json={"query": document}, headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 200
    body = response.get_json()
    assert "errors" not in body
    assert body["data"]["me"]["code"]


def test_graphiql_introspection_fits_the_limits_in_development(jane):
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )

    schema = jane.execute(query)["__schema"]

    assert schema["queryType"] == {"name": "Query"}
