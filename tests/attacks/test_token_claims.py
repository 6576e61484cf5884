"""Attack: tokens that say too little or were issued to someone else. An access token without
`typ` is refused exactly like a wrong one; a token whose `azp` (the client it was issued to)
names a client this API does not accept is refused, even when an audience mapper put the API
in its `aud`; `aud` stays required, and `azp` never stands in for it.

The service runs as the Procfile's `web` in production mode, over this run's PostgreSQL and
Redis, and verifies tokens that the development identity provider signs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.production import WebServer, production_env, web_server

ME = "{ me { id } }"
JANE_SUB = "2c95d280-3560-4991-af5d-d592b6982eb4"
LOGIN = """mutation($input: LoginInput!) {
  login(input: $input) { accessToken success message }
}"""
# The browser app's own public client, whose tokens carry the API's audience by a mapper.
SPA = "shop_spa"


@pytest.fixture(scope="module")
def api(database_url, idp, app, tmp_path_factory) -> Iterator[WebServer]:
    """The API accepting its own client's tokens only (no OIDC_AUTHORIZED_PARTIES)."""
    env = production_env(database_url, idp.issuer)
    with web_server(env, tmp_path_factory.mktemp("metrics")) as server:
        yield server


@pytest.fixture(scope="module")
def api_with_spa(database_url, idp, app, tmp_path_factory) -> Iterator[WebServer]:
    """The API accepting the browser app's client too."""
    env = production_env(database_url, idp.issuer, OIDC_AUTHORIZED_PARTIES=f" {SPA} ,mobile")
    with web_server(env, tmp_path_factory.mktemp("metrics")) as server:
        yield server


def me(server: WebServer, token: str) -> requests.Response:
    return requests.post(
        f"{server.url}/graphql",
        json={"query": ME},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def token(idp: Any, **claims: Any) -> str:
    """Jane's access token as the provider mints it, with `claims` changed (None drops one)."""
    return idp.issue_access_token("jane", **claims)


def refusal_of(response: requests.Response) -> tuple[int, str | None, Any]:
    return response.status_code, response.headers.get("WWW-Authenticate"), response.json()


def assert_accepted(response: requests.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"me": {"id": JANE_SUB}}}


def assert_refused(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "data" not in response.json()
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# -- typ -------------------------------------------------------------------------------------


def test_an_access_token_as_the_provider_mints_it_is_accepted(api, idp, committed):
    assert_accepted(me(api, token(idp)))


def test_a_token_from_the_login_mutation_is_accepted(api, committed):
    variables = {"input": {"username": "jane", "password": "jane"}}
    login = requests.post(
        f"{api.url}/graphql", json={"query": LOGIN, "variables": variables}, timeout=10
    )
    assert login.json()["data"]["login"]["success"] is True, login.text

    assert_accepted(me(api, login.json()["data"]["login"]["accessToken"]))


def test_a_token_without_typ_is_refused_like_a_wrong_one(api, idp):
    without_typ = me(api, token(idp, typ=None))
    refresh_typ = me(api, token(idp, typ="Refresh"))
    foreign_signature = me(api, token(idp)[:-8] + "AAAAAAAA")

    assert_refused(without_typ)
    assert refusal_of(without_typ) == refusal_of(refresh_typ) == refusal_of(foreign_signature)


@pytest.mark.parametrize("typ", ["bearer", "ID", "", ["Bearer"]], ids=repr)
def test_a_token_of_another_type_is_refused(api, idp, typ):
    assert_refused(me(api, token(idp, typ=typ)))


# -- azp -------------------------------------------------------------------------------------


@pytest.mark.parametrize("azp", ["account-console", SPA, "", ["customer_api"], 7], ids=repr)
def test_a_token_issued_to_another_client_is_refused_despite_its_audience(api, idp, azp):
    # aud still names the API (customer_api, account): only the authorized party is wrong.
    assert_refused(me(api, token(idp, azp=azp)))


def test_a_token_without_azp_is_judged_by_its_audience(api, idp, committed):
    assert_accepted(me(api, token(idp, azp=None)))
    assert_refused(me(api, token(idp, azp=None, aud="account")))


@pytest.mark.parametrize("azp", [SPA, "mobile", "customer_api"])
def test_clients_named_in_oidc_authorized_parties_are_accepted(api_with_spa, idp, azp, committed):
    # What an audience mapper on the browser app's client puts in its tokens.
    assert_accepted(me(api_with_spa, token(idp, azp=azp, aud=["customer_api"])))


@pytest.mark.parametrize("azp", ["account-console", "shop_spa2", f"{SPA},mobile"])
def test_clients_not_named_stay_refused(api_with_spa, idp, azp):
    assert_refused(me(api_with_spa, token(idp, azp=azp, aud=["customer_api"])))


# -- aud stays required ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aud", [None, "account", [], [SPA], ["account", "customer_api-2"]], ids=repr
)
def test_azp_naming_an_accepted_client_never_stands_in_for_the_audience(api_with_spa, idp, aud):
    for azp in ("customer_api", SPA):
        assert_refused(me(api_with_spa, token(idp, azp=azp, aud=aud)))
