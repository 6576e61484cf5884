"""Sign-in operations over real HTTP to a development provider: login, refreshToken, logout,
userInfo and me; an unreachable provider answers plainly and quickly; nothing secret is logged."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask

from common.settings import Settings
from dev.idp import DevIdentityProvider
from models.db import db
from tests.silent import SilentServer, returns
from web import create_app
from web.identity import IdentityProvider

PASSWORD = "Pw-7f3e9c1a-not-in-any-log"
WANJIRU = {
    "username": "wanjiru",
    "password": PASSWORD,
    "sub": "7d1c6a2e-5a43-4c0f-9d51-0f6f2a8b9c11",
    "name": "Wanjiru Kamau",
    "email": "wanjiru@example.com",
    "phone_number": "0722 000 111",
    "realm_roles": ["customer"],
    "client_roles": {"customer_api": ["customer"]},
}
UNAVAILABLE = "identity provider unavailable"

LOGIN = """
mutation Login($input: LoginInput!) {
  login(input: $input) {
    accessToken refreshToken expiresIn userInfo { email userId fullName roles } success message
  }
}
"""
REFRESH = """
mutation Refresh($token: String!) {
  refreshToken(input: {refreshToken: $token}) {
    accessToken refreshToken userInfo { userId } success message
  }
}
"""
LOGOUT = "mutation Logout($token: String!) { logout(refreshToken: $token) { success message } }"
ME = "{ me { id code name email phone } }"
USER_INFO = "{ userInfo { userId email fullName username phone roles } }"


def dispose(application: Flask) -> None:
    with application.app_context():
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture(scope="module")
def provider() -> Iterator[DevIdentityProvider]:
    idp = DevIdentityProvider([WANJIRU], client_id="customer_api", client_secret="ops-secret")
    with idp.serve_in_thread(host="127.0.0.1", port=0):
        yield idp


def app_for(settings: Settings, issuer: str) -> Flask:
    return create_app(
        replace(settings, oidc_issuer=issuer, oidc_client_secret="ops-secret", oidc_jwks_url=None)
    )


@pytest.fixture(scope="module")
def ops_app(settings: Settings, provider: DevIdentityProvider) -> Iterator[Flask]:
    application = app_for(settings, provider.issuer)
    yield application
    dispose(application)


def call(
    application: Flask, query: str, variables: dict | None = None, token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = application.test_client().post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def data(application: Flask, query: str, variables: dict | None = None, token: str | None = None):
    body = call(application, query, variables, token)
    assert "errors" not in body, body["errors"]
    return body["data"]


def login(application: Flask, username: str = "wanjiru", password: str = PASSWORD):
    variables = {"input": {"username": username, "password": password}}
    return data(application, LOGIN, variables)["login"]


def refresh(application: Flask, refresh_token: str):
    return data(application, REFRESH, {"token": refresh_token})["refreshToken"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- login ----------------------------------------------------------------------------------------


def test_login_answers_tokens_and_the_user(ops_app, session):
    result = login(ops_app)

    assert result["success"] is True
    assert result["message"]
    assert result["accessToken"].count(".") == 2
    assert result["refreshToken"]
    assert result["expiresIn"] == 300
    user = result["userInfo"]
    assert user["userId"] == WANJIRU["sub"]
    assert user["email"] == "wanjiru@example.com"
    assert user["fullName"] == "Wanjiru Kamau"
    assert "customer" in user["roles"]
    assert "admin" not in user["roles"]


def test_login_access_token_is_accepted_by_the_api(ops_app, session):
    token = login(ops_app)["accessToken"]

    me = data(ops_app, ME, token=token)["me"]

    assert me["id"] == WANJIRU["sub"]
    assert me["phone"] == "+254722000111"


@pytest.mark.parametrize(
    ("username", "password"),
    [("wanjiru", "wrong-password"), ("nobody", PASSWORD), ("wanjiru", "")],
    ids=["wrong-password", "unknown-user", "empty-password"],
)
def test_wrong_credentials_answer_success_false_with_a_plain_message(
    ops_app, session, username, password
):
    result = login(ops_app, username, password)

    assert result == {
        "accessToken": None,
        "refreshToken": None,
        "expiresIn": None,
        "userInfo": None,
        "success": False,
        "message": result["message"],
    }
    assert result["message"] == "Invalid username or password"


def test_login_with_an_unreachable_provider_is_unavailable(settings, session):
    application = app_for(settings, f"http://127.0.0.1:{closed_port()}/realms/donfiles")
    try:
        result = login(application)
    finally:
        dispose(application)

    assert result["success"] is False
    assert result["message"] == UNAVAILABLE
    assert result["accessToken"] is None


def test_login_with_a_provider_that_never_answers_gives_up_and_is_unavailable(settings, session):
    silent = SilentServer()  # takes the connection, never answers
    application = app_for(settings, silent.url("http", "/realms/donfiles"))
    try:
        result = returns(lambda: login(application), "a login to a provider that never answers")
        silent.wait_for_hang_up()  # the service stopped waiting: its own timeout
    finally:
        dispose(application)
        silent.close()

    assert silent.bytes_received > 0  # it did ask
    assert result["success"] is False
    assert result["message"] == UNAVAILABLE


def test_refresh_with_an_unreachable_provider_is_unavailable(settings, provider, session):
    refresh_token = provider.issue_tokens("wanjiru")["refresh_token"]
    application = app_for(settings, f"http://127.0.0.1:{closed_port()}/realms/donfiles")
    try:
        result = refresh(application, refresh_token)
    finally:
        dispose(application)

    assert result["success"] is False
    assert result["message"] == UNAVAILABLE


# -- refresh and logout ---------------------------------------------------------------------------


def test_refresh_token_gives_a_new_working_access_token(ops_app, session):
    first = login(ops_app)

    renewed = refresh(ops_app, first["refreshToken"])

    assert renewed["success"] is True
    assert renewed["accessToken"] != first["accessToken"]
    assert renewed["userInfo"] == {"userId": WANJIRU["sub"]}
    me = data(ops_app, ME, token=renewed["accessToken"])["me"]
    assert me["id"] == WANJIRU["sub"]


def test_refresh_with_a_bogus_token_fails_plainly(ops_app, session):
    result = refresh(ops_app, "not-a-refresh-token")

    assert result["success"] is False
    assert result["accessToken"] is None
    assert result["message"] == "The refresh token is invalid or expired"


def test_refresh_with_an_access_token_fails(ops_app, session):
    result = refresh(ops_app, login(ops_app)["accessToken"])

    assert result["success"] is False
    assert result["accessToken"] is None


def test_logout_revokes_the_session_so_a_later_refresh_fails(ops_app, session):
    tokens = login(ops_app)

    result = data(ops_app, LOGOUT, {"token": tokens["refreshToken"]}, tokens["accessToken"])

    assert result["logout"] == {"success": True, "message": result["logout"]["message"]}
    after = refresh(ops_app, tokens["refreshToken"])
    assert after["success"] is False
    assert after["accessToken"] is None


def test_logout_of_an_ended_session_fails(ops_app, session):
    tokens = login(ops_app)
    data(ops_app, LOGOUT, {"token": tokens["refreshToken"]}, tokens["accessToken"])

    again = data(ops_app, LOGOUT, {"token": tokens["refreshToken"]}, tokens["accessToken"])

    assert again["logout"]["success"] is False


def test_logout_without_a_token_is_unauthenticated_and_revokes_nothing(ops_app, session):
    tokens = login(ops_app)

    body = call(ops_app, LOGOUT, {"token": tokens["refreshToken"]})

    assert body["data"] == {"logout": None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert refresh(ops_app, tokens["refreshToken"])["success"] is True


@pytest.mark.parametrize("operation", ["refreshToken", "logout"])
def test_no_database_transaction_is_held_open_while_the_provider_answers(
    settings, provider, ops_app, session, monkeypatch, operation
):
    tokens = login(ops_app)
    fresh_app = app_for(settings, provider.issuer)  # has not seen the access token yet
    open_while_waiting = []
    post = IdentityProvider._post

    def observed(self, endpoint, form):
        open_while_waiting.append(db.session().in_transaction())
        return post(self, endpoint, form)

    monkeypatch.setattr(IdentityProvider, "_post", observed)
    try:
        query = REFRESH if operation == "refreshToken" else LOGOUT
        result = data(fresh_app, query, {"token": tokens["refreshToken"]}, tokens["accessToken"])
    finally:
        dispose(fresh_app)

    assert result[operation]["success"] is True
    # The caller's record was read first (a token this process had not seen); that read's
    # transaction, and its pooled connection, must not wait on the provider.
    assert open_while_waiting == [False]


# -- who is calling -------------------------------------------------------------------------------


def test_user_info_describes_the_caller(ops_app, provider, session):
    token = provider.issue_access_token("wanjiru")

    info = data(ops_app, USER_INFO, token=token)["userInfo"]

    assert info["userId"] == WANJIRU["sub"]
    assert info["email"] == "wanjiru@example.com"
    assert info["fullName"] == "Wanjiru Kamau"
    assert info["username"] == "wanjiru"
    assert info["phone"] == "+254722000111"
    assert "customer" in info["roles"]


def test_me_is_the_callers_customer_record(ops_app, provider, session):
    token = provider.issue_access_token("wanjiru")

    me = data(ops_app, ME, token=token)["me"]

    assert me["id"] == WANJIRU["sub"]
    assert me["name"] == "Wanjiru Kamau"
    assert me["email"] == "wanjiru@example.com"
    assert me["phone"] == "+254722000111"
    assert me["code"]


# -- nothing secret in the logs -------------------------------------------------------------------


def test_passwords_and_tokens_never_appear_in_logs(ops_app, provider, session, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "Wrong-0b5d2e77-password"

    assert login(ops_app, "wanjiru", wrong)["success"] is False
    first = login(ops_app)
    renewed = refresh(ops_app, first["refreshToken"])
    data(ops_app, LOGOUT, {"token": renewed["refreshToken"]}, renewed["accessToken"])
    assert refresh(ops_app, renewed["refreshToken"])["success"] is False
    hostile = provider.sign(provider.access_claims("wanjiru", aud="account"))
    refused = ops_app.test_client().post(
        "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {hostile}"}
    )
    assert refused.status_code == 401

    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    logged = caplog.text + "".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    secrets = [PASSWORD, wrong]
    tokens = [first["accessToken"], first["refreshToken"], hostile]
    for token in [*tokens, renewed["accessToken"], renewed["refreshToken"]]:
        secrets += [token, token.rsplit(".", 1)[-1]]  # the whole token, and its signature
    leaked = [secret[:12] + "..." for secret in secrets if secret in logged]
    assert leaked == []
