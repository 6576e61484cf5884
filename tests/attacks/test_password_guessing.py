# ruff: noqa: F811 - pytest fixtures imported from tests.limits_support are used by name
"""Password guessing through `login`: every wrong guess used to reach the identity provider at
full speed, and Keycloak's lockout after 30 failures then let anyone lock a user out. Guesses
past the limits must never reach the provider, and a stranger's guesses from one address must
not shut the user out where she signs in. Production mode, real Postgres and Redis, the
development identity provider (whose token endpoint counts the requests it receives)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from flask import Flask
from limits import parse_many

from common.settings import ConfigError, Settings
from tests.limits_support import SHIPPED, closed_port, production, rate_limited  # noqa: F401

LOGIN = """
mutation Login($input: LoginInput!) {
  login(input: $input) { success message accessToken userInfo { username } }
}
"""
PER_USERNAME = parse_many(SHIPPED.login_rate_limit)[0].amount  # 5 a minute, from one address
PER_ADDRESS = parse_many(SHIPPED.login_address_rate_limit)[0].amount  # 30 a minute
KEYCLOAK_LOCKOUT = 30  # failures before Keycloak's brute-force detection locks the user out
ATTACKER = "203.0.113.66"
OFFICE = "198.51.100.10"


def attempt(application: Flask, username: str, password: str, address: str = ATTACKER):
    return application.test_client().post(
        "/graphql",
        json={"query": LOGIN, "variables": {"input": {"username": username, "password": password}}},
        environ_base={"REMOTE_ADDR": address},
    )


def answer(response: Any) -> dict[str, Any]:
    """The login payload of an answer that was not throttled."""
    body = response.get_json()
    assert "errors" not in body, body
    return body["data"]["login"]


def grants(idp: Any) -> int:
    """How many token requests the identity provider has received so far."""
    return idp.stats()["token_requests"]


@pytest.fixture
def shop(production):
    return production()


def per_username_from_everywhere() -> int:
    return parse_many(SHIPPED.login_username_rate_limit)[0].amount


def test_the_shipped_limits_stop_guessing_well_before_keycloaks_lockout():
    for limit in parse_many(SHIPPED.login_rate_limit):
        assert limit.amount < KEYCLOAK_LOCKOUT / 2
    for limit in parse_many(SHIPPED.login_username_rate_limit):
        assert limit.amount < KEYCLOAK_LOCKOUT


def test_one_address_alone_never_reaches_the_limit_of_every_address():
    from_one_address = parse_many(SHIPPED.login_rate_limit)
    for limit in parse_many(SHIPPED.login_username_rate_limit):
        window = limit.get_expiry()
        # In a moving window of W seconds, a limit of N per E seconds lets at most N * ceil(W/E).
        most = min(own.amount * math.ceil(window / own.get_expiry()) for own in from_one_address)
        assert most < limit.amount


def test_wrong_logins_past_the_username_limit_never_reach_the_provider(shop, idp, session):
    before = grants(idp)
    for guess in range(PER_USERNAME):
        result = answer(attempt(shop, "jane", f"guess-{guess}"))
        assert result == {
            "success": False,
            "message": "Invalid username or password",
            "accessToken": None,
            "userInfo": None,
        }
    assert grants(idp) == before + PER_USERNAME

    # The next guess, however the name is spelled and whatever the password, even the right one.
    throttled = [
        attempt(shop, "jane", "guess-next"),
        attempt(shop, " JANE ", "guess-next"),
        attempt(shop, "jane", "jane"),
    ]

    for response in throttled:
        error = rate_limited(response)
        assert error is not None, response.get_json()
        assert error["path"] == ["login"]
        assert 0 < error["extensions"]["retryAfter"] <= 60
        assert response.get_json()["data"] == {"login": None}
    assert grants(idp) == before + PER_USERNAME


def test_a_strangers_failures_do_not_lock_the_user_out_from_her_own_address(shop, idp, session):
    for guess in range(PER_USERNAME):
        assert answer(attempt(shop, "jane", f"guess-{guess}"))["success"] is False
    assert rate_limited(attempt(shop, "jane", "guess-next")) is not None

    signed_in = answer(attempt(shop, "jane", "jane", OFFICE))

    assert signed_in["success"] is True
    assert signed_in["userInfo"]["username"] == "jane"
    # Her success forgets nothing of the stranger's address.
    assert rate_limited(attempt(shop, "jane", "jane")) is not None


def test_guesses_spread_over_many_addresses_stop_at_the_limit_of_every_address(shop, idp, session):
    before = grants(idp)
    for guess in range(per_username_from_everywhere()):
        # Each address stays under its own limit for the username.
        address = f"203.0.113.{guess // (PER_USERNAME - 1) + 1}"
        assert answer(attempt(shop, "jane", f"guess-{guess}", address))["success"] is False
    assert grants(idp) == before + per_username_from_everywhere()

    from_a_new_address = attempt(shop, "jane", "guess-next", "192.0.2.200")
    from_her_office = attempt(shop, "jane", "jane", OFFICE)

    for response in (from_a_new_address, from_her_office):
        error = rate_limited(response)
        assert error is not None, response.get_json()
        assert error["path"] == ["login"]
    assert grants(idp) == before + per_username_from_everywhere()
    # Other users are not affected.
    assert answer(attempt(shop, "admin", "admin", OFFICE))["success"] is True


def test_guesses_from_everywhere_do_not_lock_the_user_out_of_an_address_she_signed_in_from(
    shop, idp, session
):
    """The limit of every address stops distributed guessing, and would let anyone lock a user
    out for its window with a few addresses; an address she signed in from lately keeps its
    own limit only."""
    assert answer(attempt(shop, "jane", "jane", OFFICE))["success"] is True
    for guess in range(per_username_from_everywhere()):
        address = f"203.0.113.{guess // (PER_USERNAME - 1) + 1}"
        attempt(shop, "jane", f"guess-{guess}", address)

    assert rate_limited(attempt(shop, "jane", "jane", "192.0.2.202")) is not None
    assert answer(attempt(shop, "jane", "jane", OFFICE))["success"] is True
    # Her office still has its own limit for the username.
    for guess in range(PER_USERNAME):
        attempt(shop, "jane", f"typo-{guess}", OFFICE)
    assert rate_limited(attempt(shop, "jane", "jane", OFFICE)) is not None


def test_a_success_forgets_the_failures_of_every_address(shop, idp, session):
    for guess in range(per_username_from_everywhere() - 1):
        address = f"203.0.113.{guess // (PER_USERNAME - 1) + 1}"
        attempt(shop, "jane", f"guess-{guess}", address)

    assert answer(attempt(shop, "jane", "jane", OFFICE))["success"] is True

    # As Keycloak forgets a user's failures on a success: only failures in a row count.
    for guess in range(PER_USERNAME - 1):
        assert answer(attempt(shop, "jane", f"again-{guess}", "192.0.2.201"))["success"] is False
    assert answer(attempt(shop, "jane", "jane", OFFICE))["success"] is True


def test_the_address_limit_holds_across_usernames(shop, idp, session):
    before = grants(idp)
    for n in range(PER_ADDRESS):
        assert answer(attempt(shop, f"sprayed-{n}", "Password1!"))["success"] is False
    assert grants(idp) == before + PER_ADDRESS

    sprayed = attempt(shop, "sprayed-next", "Password1!")
    known_user = attempt(shop, "admin", "admin")

    assert rate_limited(sprayed) is not None
    assert rate_limited(known_user) is not None
    assert grants(idp) == before + PER_ADDRESS
    # Another address is not affected.
    assert answer(attempt(shop, "admin", "admin", address=OFFICE))["success"] is True


def test_an_ipv6_caller_is_counted_by_its_network_not_by_each_address(shop, idp, session):
    for n in range(PER_ADDRESS):
        address = f"2001:db8:5:7::{n + 1:x}"  # one /64, a fresh address every time
        assert answer(attempt(shop, f"sprayed-{n}", "Password1!", address))["success"] is False

    assert rate_limited(attempt(shop, "another", "Password1!", "2001:db8:5:7::ffff")) is not None
    assert answer(attempt(shop, "admin", "admin", "2001:db8:5:8::1"))["success"] is True


def test_an_ipv4_caller_is_the_same_caller_over_ipv6(shop, idp, session):
    for n in range(PER_ADDRESS):
        assert answer(attempt(shop, f"sprayed-{n}", "Password1!", "192.0.2.7"))["success"] is False

    assert rate_limited(attempt(shop, "another", "Password1!", "::ffff:192.0.2.7")) is not None


def test_a_real_user_who_mistypes_still_signs_in_and_starts_afresh(shop, idp, session):
    for _ in range(PER_USERNAME - 1):
        assert answer(attempt(shop, "jane", "jnae", OFFICE))["success"] is False

    signed_in = answer(attempt(shop, "jane", "jane", OFFICE))

    assert signed_in["success"] is True
    assert signed_in["userInfo"]["username"] == "jane"
    # The success forgets the failures before it, as Keycloak does.
    for _ in range(PER_USERNAME - 1):
        assert answer(attempt(shop, "jane", "jnae", OFFICE))["success"] is False
    assert answer(attempt(shop, "jane", "jane", OFFICE))["success"] is True


def test_one_users_guessed_password_leaves_other_users_alone(shop, idp, session):
    guesses = [attempt(shop, "jane", "guess") for _ in range(PER_USERNAME + 1)]
    assert rate_limited(guesses[-1]) is not None

    assert answer(attempt(shop, "admin", "admin", OFFICE))["success"] is True


def test_a_throttled_login_is_logged_without_the_password(shop, idp, session, caplog):
    caplog.set_level(logging.INFO)
    password = "Guess-6f1c0e9a-password"
    for _ in range(PER_USERNAME):
        attempt(shop, "jane", password)

    assert rate_limited(attempt(shop, "jane", password)) is not None

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("rate limited" in record.getMessage() for record in warnings)
    logged = caplog.text + "".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert password not in logged


def test_with_redis_unreachable_the_limits_still_hold_from_memory(production, idp, session):
    no_redis = production(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    before = grants(idp)

    for guess in range(PER_USERNAME):
        assert answer(attempt(no_redis, "jane", f"guess-{guess}"))["success"] is False
    throttled = attempt(no_redis, "jane", "guess-next")

    assert rate_limited(throttled) is not None
    assert grants(idp) == before + PER_USERNAME
    assert answer(attempt(no_redis, "admin", "admin", OFFICE))["success"] is True


@pytest.mark.parametrize(
    "variable",
    [
        "LOGIN_RATE_LIMIT",
        "LOGIN_USERNAME_RATE_LIMIT",
        "LOGIN_ADDRESS_RATE_LIMIT",
        "SESSION_ADDRESS_RATE_LIMIT",
        "SMS_RATE_LIMIT",
    ],
)
@pytest.mark.parametrize("value", ["five a minute", "5/fortnight", "0 per minute"])
def test_a_malformed_limit_stops_the_process_naming_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_limits_are_read_from_the_environment():
    settings = Settings.from_env({"LOGIN_RATE_LIMIT": "3/minute;12/hour"})

    assert [str(limit) for limit in parse_many(settings.login_rate_limit)] == [
        "3 per 1 minute",
        "12 per 1 hour",
    ]
