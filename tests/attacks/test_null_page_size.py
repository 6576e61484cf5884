"""A page size of null (or one left out) must cost what it serves: the resolver serves its
default page of 20 rows, so the cost limit counts 20, however the null arrives."""

from __future__ import annotations

import pytest

from tests.clients import GraphQLClient
from tests.factories import CustomerFactory, OrderFactory, row_counts


def nested(size: str, aliases: int = 5) -> str:
    """Lists of lists, each sized by `size` (empty: no argument). Each alias costs
    allOrders 10 + 20 x (1 + customer (10 + 1 + orders (40 + 20 x (1 + nodes (1 + id)))))
    = 2,250 at 20 rows a page (a field that asks the database costs 10 more each time it
    runs, a customer's orders 40); five of them cost 11,250, over the limit of 5,000."""
    argument = f"(first: {size})" if size else ""
    return " ".join(
        f"a{n}: allOrders{argument} {{ customer {{ orders{argument} {{ nodes {{ id }} }} }} }}"
        for n in range(aliases)
    )


@pytest.fixture
def prod(production_app, session, idp) -> GraphQLClient:
    """An admin on the production-mode app, who may list every order (its customer record
    provisioned already, so that a refused request is seen to write nothing)."""
    client = GraphQLClient(production_app.test_client(), idp.issue_access_token("admin"))
    client.execute("{ me { id } }")
    return client


def cost_refusal(response) -> dict:
    assert response.status_code == 400, response.get_data(as_text=True)
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    return error


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ("{ " + nested("null") + " }", {}),
        ("query($n: Int) { " + nested("$n") + " }", {"n": None}),
        ("query($n: Int) { " + nested("$n") + " }", {}),
        ("query($n: Int = null) { " + nested("$n") + " }", {}),
    ],
    ids=["literal-null", "variable-null", "variable-omitted", "default-null"],
)
def test_a_null_or_omitted_page_size_costs_the_default_page(prod, session, document, variables):
    before = row_counts(session)

    error = cost_refusal(prod.post(document, variables))

    assert error["extensions"]["cost"] == {"requestedQueryCost": 11250, "maximumAvailable": 5000}
    assert row_counts(session) == before


def test_leaving_first_out_costs_the_same_as_null(prod):
    document = "{ " + nested("") + " }"

    error = cost_refusal(prod.post(document))

    assert error["extensions"]["cost"]["requestedQueryCost"] == 11250


def test_null_is_costed_at_what_the_resolver_serves(prod):
    customer = CustomerFactory()
    for _ in range(25):
        OrderFactory(customer=customer)

    served = prod.execute("{ allOrders(first: null) { id } }")["allOrders"]

    assert len(served) == 20


def test_the_same_document_within_the_limit_is_served(prod):
    response = prod.post("{ " + nested("null", aliases=2) + " }")  # 4,500

    assert response.status_code == 200
    assert "errors" not in response.get_json()


def test_every_list_with_a_page_size_counts_the_notifications_too(prod):
    fields = "nodes { id status attempts lastError phone body createdAt updatedAt }"
    aliases = " ".join(f"n{i}: notifications(first: 100) {{ {fields} }}" for i in range(6))

    error = cost_refusal(prod.post("{ " + aliases + " }"))

    # Each alias: 10 + 100 x (1 + nodes (1 + 6 fields + lastError 12 + body 3)) = 2,310;
    # six: 13,860.
    assert error["extensions"]["cost"]["requestedQueryCost"] == 13860
