"""Attack: a customer asks for what only admins may list, and a price written in digits that
are not 0-9. The notification list answers FORBIDDEN (not a "bad input" the caller could
fix); a Decimal is ASCII digits only: Python reads Arabic-Indic (٣) and full-width
digits as numbers, but no client means them as money and a person reading the order would
not. Nor is a price written otherwise than JSON writes a number (spaces around, a plus,
`.5`, `5.`): one amount, one way to write it. Either refusal carries BAD_USER_INPUT.
Production mode, real PostgreSQL and Redis, tokens of the development identity provider.
"""

from __future__ import annotations

import pytest

from tests.clients import GraphQLClient
from tests.factories import row_counts

CREATE = (
    "mutation($input: CreateOrderInput!) "
    "{ createOrder(input: $input) { success order { total { amount } } } }"
)


@pytest.fixture
def callers(production_app, session, idp) -> dict[str, GraphQLClient]:
    clients = {
        name: GraphQLClient(production_app.test_client(), idp.issue_access_token(name))
        for name in ("admin", "jane")
    }
    for client in clients.values():
        client.execute("{ me { id } }")  # provisioned, so a refusal is seen to write nothing
    return clients


@pytest.mark.parametrize(
    "query",
    [
        "{ notifications { nodes { id } } }",
        "{ notifications(inDoubt: true, first: 5) { nodes { id phone } } }",
        "{ notifications(status: FAILED) { edges { cursor } pageInfo { hasNextPage } } }",
    ],
)
def test_a_customer_listing_notifications_is_forbidden(callers, query):
    response = callers["jane"].post(query)

    body = response.get_json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN"}
    assert error["path"] == ["notifications"]
    assert error["message"] == "only an admin may list notifications"
    # The same list, asked by an admin, is served.
    assert callers["admin"].execute(query)["notifications"] is not None


NOT_ASCII_DIGITS = {
    "Arabic-Indic": "٣٠٠",
    "Extended Arabic-Indic": "۳۰۰",
    "Devanagari": "३००",
    "full-width": "\uff13\uff10\uff10",
    "mathematical bold": "\U0001d7d1\U0001d7ce\U0001d7ce",
    "full-width after ASCII": "30\uff10",
    "an Arabic decimal separator": "300\u066b50",
    "underscores": "3_00",
    "a non-breaking space around": "\u00a0300\u00a0",
    "NaN": "NaN",
    "Infinity": "-Infinity",
    # ASCII digits, written otherwise than JSON writes a number.
    "spaces around": " 12.5 ",
    "a plus": "+7",
    "no digit before the point": ".5",
    "no digit after the point": "5.",
    "leading zeros": "007",
}


@pytest.mark.parametrize("price", NOT_ASCII_DIGITS.values(), ids=NOT_ASCII_DIGITS.keys())
def test_a_price_in_other_digits_is_refused_naming_the_field(callers, session, price):
    before = row_counts(session)

    as_variable = callers["jane"].post(CREATE, {"input": {"price": price}})
    as_literal = callers["jane"].post(
        f'mutation {{ createOrder(input: {{price: "{price}"}}) {{ success }} }}'
    )

    for response in (as_variable, as_literal):
        body = response.get_json()
        assert not (body.get("data") or {}).get("createOrder"), body
        [error] = body["errors"]
        assert "is not a decimal number: write it with the digits 0-9" in error["message"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert "at 'input.price'" in as_variable.get_json()["errors"][0]["message"]
    assert row_counts(session) == before


@pytest.mark.parametrize(
    ("price", "amount"),
    [
        ("300", "300.00"),
        ("12.5", "12.50"),
        ("0.5", "0.50"),
        ("1200.50", "1200.50"),
        ("1E2", "100.00"),
    ],
)
def test_a_price_in_ascii_digits_is_taken(callers, price, amount):
    result = callers["jane"].execute(CREATE, {"input": {"price": price}})["createOrder"]

    assert result == {"success": True, "order": {"total": {"amount": amount}}}


def test_a_price_with_an_exponent_past_what_a_decimal_holds_is_refused(callers, session):
    before = row_counts(session)
    price = "1e" + "9" * 30

    response = callers["jane"].post(CREATE, {"input": {"price": price}})

    [error] = response.get_json()["errors"]
    assert error["message"].endswith(f"'{price}' is not a decimal number")
    assert row_counts(session) == before
