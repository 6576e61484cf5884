"""Attack: a body of 64 KiB whose variables make the service build far more than 64 KiB.

A variable's name and a long list inside it once cost the name's length for every item (the
path of each item was written out before anything was found wrong with it): a 32,700-character
name holding 16,300 items took 450 MB. Production mode, real PostgreSQL and Redis, the
development identity provider; memory is measured with tracemalloc around the request, which
runs in this process.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from tests.clients import GraphQLClient
from tests.factories import JANE_SUB, row_counts

BODY_LIMIT = 64 * 1024
# What a request of these bodies may allocate at its peak: the decoded body (a list of some
# 16,000 numbers) and the request's own work, nowhere near a path per item.
PEAK_BYTES = 16 * 1024 * 1024


@pytest.fixture
def jane(production_app, session, idp) -> GraphQLClient:
    client = GraphQLClient(production_app.test_client(), idp.issue_access_token("jane"))
    client.execute("{ me { id } }")  # provisioned, and the app warmed up
    return client


def post_measured(client: GraphQLClient, body: str):
    """The answer to `body` and the most memory the request held at once."""
    headers = {"Authorization": f"Bearer {client.token}"}
    tracemalloc.start()
    try:
        response = client.client.post(
            "/graphql", data=body, content_type="application/json", headers=headers
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response, peak


def body_of(query: str, name: str, items: list[str]) -> str:
    """A request body whose variable `name` is a list of these items, written as JSON."""
    head = json.dumps({"query": query})[:-1]
    return f'{head}, "variables": {{"{name}": [{",".join(items)}]}}}}'


def test_a_long_variable_name_over_many_items_costs_no_path_per_item(jane, session):
    # The attacker's body: a variable the operation does not declare.
    name = "v" * 32_700
    body = body_of("{ me { id } }", name, ["0"] * 16_300)
    assert len(body) <= BODY_LIMIT
    before = row_counts(session)

    response, peak = post_measured(jane, body)

    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.get_json() == {"data": {"me": {"id": JANE_SUB}}}
    assert peak < PEAK_BYTES, f"the request held {peak / 2**20:.0f} MB"
    assert row_counts(session) == before


def test_a_declared_variable_is_walked_to_its_last_item_without_a_path_per_item(jane, session):
    # Declared (and unused: validation would refuse it), so every item is looked at, and the
    # last one is not a number a double can hold.
    name = "v" * 16_000
    query = f"query(${name}: [Float]) {{ me {{ id }} }}"
    items = ["0"] * 16_000 + ["1e400"]
    body = body_of(query, name, items)
    assert len(body) <= BODY_LIMIT
    before = row_counts(session)

    response, peak = post_measured(jane, body)

    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "field": f"{name}[16000]",
        "reason": "INVALID",
        "variable": name,
    }
    assert "beyond the range of a double" in error["message"]
    assert peak < PEAK_BYTES, f"the request held {peak / 2**20:.0f} MB"
    assert row_counts(session) == before


def test_a_variable_the_operation_does_not_declare_is_not_read(jane):
    # Nothing reads an undeclared variable (GraphQL ignores it), so nothing refuses it: the
    # operation runs as if it were not there.
    body = json.dumps({"query": "{ me { id } }", "variables": {"extra": ["\ud800", {"\udc00": 1}]}})

    response = jane.client.post(
        "/graphql",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {jane.token}"},
    )

    assert response.status_code == 200
    assert response.get_json() == {"data": {"me": {"id": JANE_SUB}}}


def test_unused_declared_variables_are_still_refused_by_validation(jane):
    response = jane.post("query($first: Int) { me { id } }", {"first": 1})

    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["message"] == "Variable '$first' is never used."


def test_at_most_ten_problems_are_reported_however_many_variables_hold_them(jane, session):
    names = [f"v{n}" for n in range(12)]
    query = f"query({', '.join(f'${name}: [String]' for name in names)}) {{ me {{ id }} }}"
    variables = {name: ["\ud800", "\udfff"] for name in names}

    response = jane.post(query, variables)

    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert [error["extensions"]["field"] for error in errors] == [
        f"v{n}[{i}]" for n in range(5) for i in range(2)
    ]
