# ruff: noqa: F811 - pytest fixtures imported from tests.limits_support are used by name
"""The identity provider as an amplifier: `refreshToken` aliased 49 times in one document made
49 calls to the provider, and nothing throttled refreshToken or logout at all. A request runs
at most one sign-in field (login, refreshToken, logout), and refreshToken and logout are
throttled per client address before the provider hears of them. Production mode, real Postgres
and Redis, the development identity provider (which counts the requests it receives)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from limits import parse_many

from tests.limits_support import SHIPPED, client, production, rate_limited  # noqa: F401

ATTACKER = "203.0.113.66"
OFFICE = "198.51.100.10"
ONE_SIGN_IN = "TOO_MANY_SIGN_IN_FIELDS"
REFRESH = """
mutation Refresh($token: String!) {
  refreshToken(input: {refreshToken: $token}) { success message accessToken }
}
"""
LOGOUT = "mutation Logout($token: String!) { logout(refreshToken: $token) { success message } }"
LOGIN = """
mutation Login($input: LoginInput!) { login(input: $input) { success message } }
"""


def aliased_refreshes(count: int) -> str:
    fields = " ".join(
        f"r{n}: refreshToken(input: $input) {{ success accessToken }}" for n in range(count)
    )
    return f"mutation Flood($input: RefreshTokenInput!) {{ {fields} }}"


def calls(idp: Any) -> int:
    """How many requests the provider's token, logout and revocation endpoints have had."""
    stats = idp.stats()
    return stats["token_requests"] + stats["logout_requests"]


def post(application: Flask, query: str, variables: dict, address: str, token: str | None = None):
    return client(application, token).post(query, variables, environ_base={"REMOTE_ADDR": address})


def session_cap() -> int:
    return parse_many(SHIPPED.session_address_rate_limit)[0].amount


@pytest.fixture
def shop(production):
    return production()


def test_aliased_refreshes_reach_the_provider_once(shop, idp, session):
    tokens = idp.issue_tokens("jane")
    before = calls(idp)

    variables = {"input": {"refreshToken": tokens["refresh_token"]}}

    response = post(shop, aliased_refreshes(49), variables, ATTACKER)

    assert calls(idp) == before + 1
    body = response.get_json()
    assert body["data"]["r0"]["success"] is True
    assert body["data"]["r0"]["accessToken"]
    refused = [f"r{n}" for n in range(1, 49)]
    assert {alias: body["data"][alias] for alias in refused} == dict.fromkeys(refused)
    assert [error["path"] for error in body["errors"]] == [[alias] for alias in refused]
    assert {error["extensions"]["code"] for error in body["errors"]} == {ONE_SIGN_IN}


def test_a_second_sign_in_field_of_another_kind_is_refused_too(shop, idp, session):
    tokens = idp.issue_tokens("jane")
    document = """
    mutation Mixed($input: LoginInput!, $token: String!) {
      login(input: $input) { success }
      logout(refreshToken: $token) { success }
      again: refreshToken(input: {refreshToken: $token}) { success }
    }
    """
    guess = {"username": "jane", "password": "guess"}
    variables = {"input": guess, "token": tokens["refresh_token"]}
    before = calls(idp)

    body = post(shop, document, variables, ATTACKER, tokens["access_token"]).get_json()

    assert calls(idp) == before + 1
    assert body["data"] == {"login": {"success": False}, "logout": None, "again": None}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["logout"], ONE_SIGN_IN),
        (["again"], ONE_SIGN_IN),
    ]
    # The logout never happened: the session still refreshes.
    again = post(shop, REFRESH, {"token": tokens["refresh_token"]}, OFFICE).get_json()
    assert again["data"]["refreshToken"]["success"] is True


def test_refreshes_and_logouts_past_the_address_limit_never_reach_the_provider(shop, idp, session):
    tokens = idp.issue_tokens("jane")
    before = calls(idp)
    for _ in range(session_cap()):
        result = post(shop, REFRESH, {"token": "not-a-refresh-token"}, ATTACKER).get_json()
        assert result["data"]["refreshToken"]["success"] is False, result
    assert calls(idp) == before + session_cap()

    refresh = post(shop, REFRESH, {"token": tokens["refresh_token"]}, ATTACKER)
    logout = post(
        shop, LOGOUT, {"token": tokens["refresh_token"]}, ATTACKER, tokens["access_token"]
    )

    for field, response in (("refreshToken", refresh), ("logout", logout)):
        error = rate_limited(response)
        assert error is not None, response.get_json()
        assert error["path"] == [field]
        assert 0 < error["extensions"]["retryAfter"] <= 60
        assert response.get_json()["data"] == {field: None}
    assert calls(idp) == before + session_cap()
    # Another address is not affected, and the session was never ended.
    elsewhere = post(shop, REFRESH, {"token": tokens["refresh_token"]}, OFFICE).get_json()
    assert elsewhere["data"]["refreshToken"]["success"] is True


def test_refreshes_leave_the_addresss_sign_ins_alone(shop, idp, session):
    # Refreshes are routine (one per access token's lifetime, per signed-in user behind the
    # address), sign-ins are rare: one must not use up the other's budget.
    for _ in range(session_cap()):
        post(shop, REFRESH, {"token": "not-a-refresh-token"}, OFFICE)
    assert rate_limited(post(shop, REFRESH, {"token": "x"}, OFFICE)) is not None

    login = post(shop, LOGIN, {"input": {"username": "jane", "password": "jane"}}, OFFICE)

    assert login.get_json()["data"]["login"]["success"] is True
