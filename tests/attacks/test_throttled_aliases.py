# ruff: noqa: F811 - pytest fixtures imported from tests.limits_support are used by name
"""One document, many aliases of a throttled mutation: past the limit the refused aliases used
to null the whole answer (their payload was non-null), so a client saw `data: null` while the
orders before them had been placed and their SMS queued. Each refused alias must be null with
its own error, and the others must answer. Production mode, real Postgres and Redis, the
development identity provider."""

from __future__ import annotations

import pytest
from graphql import GraphQLNonNull
from limits import parse_many

from tests.factories import row_counts
from tests.limits_support import SHIPPED, client, production, rate_limited  # noqa: F401
from web.graphql import build_schema

SMS_CAP = parse_many(SHIPPED.sms_rate_limit)[0].amount  # 30 a minute
ALIASES = SMS_CAP + 5
THROTTLED = (
    "createOrder",
    "confirmOrder",
    "cancelOrder",
    "resendNotification",
    "login",
    "refreshToken",
    "logout",
)


def aliased_orders(count: int) -> str:
    fields = " ".join(
        f"o{n}: createOrder(input: $input) {{ success order {{ id status }} }}"
        for n in range(count)
    )
    return f"mutation Pump($input: CreateOrderInput!) {{ {fields} }}"


@pytest.fixture
def shop(production):
    return production()


def test_aliases_past_the_cap_are_null_and_the_orders_before_them_answer(shop, idp, session):
    jane = client(shop, idp.issue_access_token("jane"))
    before = row_counts(session, ("orders",))["orders"]

    response = jane.post(aliased_orders(ALIASES), {"input": {"price": "10"}})

    assert response.status_code == 200
    body = response.get_json()
    data = body["data"]
    assert data is not None, body
    placed = [f"o{n}" for n in range(SMS_CAP)]
    refused = [f"o{n}" for n in range(SMS_CAP, ALIASES)]
    for alias in placed:
        assert data[alias]["success"] is True, data[alias]
        assert data[alias]["order"]["status"] == "NEW"
    assert len({data[alias]["order"]["id"] for alias in placed}) == SMS_CAP
    assert {alias: data[alias] for alias in refused} == dict.fromkeys(refused)
    errors = body["errors"]
    assert [error["path"] for error in errors] == [[alias] for alias in refused]
    assert {error["extensions"]["code"] for error in errors} == {"RATE_LIMITED"}
    assert all(0 < error["extensions"]["retryAfter"] <= 60 for error in errors)
    assert row_counts(session, ("orders",))["orders"] == before + SMS_CAP


def test_a_refused_mutation_alone_is_null_with_its_error(shop, idp, session):
    jane = client(shop, idp.issue_access_token("jane"))
    jane.post(aliased_orders(SMS_CAP), {"input": {"price": "10"}})

    response = jane.post(aliased_orders(1), {"input": {"price": "10"}})

    assert response.get_json()["data"] == {"o0": None}
    assert rate_limited(response)["path"] == ["o0"]


@pytest.mark.parametrize("field", THROTTLED)
def test_every_throttled_mutation_can_be_refused_alone(field):
    # A non-null payload turns one refusal into `data: null` for the whole document.
    assert not isinstance(build_schema().mutation_type.fields[field].type, GraphQLNonNull)
