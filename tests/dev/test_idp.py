"""The development identity provider over real HTTP, checked the way a Keycloak client sees it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from jose import jwt
from jose.exceptions import ExpiredSignatureError, JWTError

from dev.idp import DevIdentityProvider, ProductionRefusedError, RunningServer, main
from dev.idp_users import load_users

ROOT = Path(__file__).resolve().parents[2]
CLIENT = {"client_id": "customer_api", "client_secret": "s3cret"}
JANE_SUB = "2c95d280-3560-4991-af5d-d592b6982eb4"
TIMEOUT = 5


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[DevIdentityProvider, RunningServer]]:
    idp = DevIdentityProvider(client_id="customer_api", client_secret="s3cret")
    with idp.serve_in_thread(host="127.0.0.1", port=0) as server:
        yield idp, server


@pytest.fixture
def server(provider: tuple[DevIdentityProvider, RunningServer]) -> RunningServer:
    return provider[1]


@pytest.fixture
def idp(provider: tuple[DevIdentityProvider, RunningServer]) -> DevIdentityProvider:
    return provider[0]


def oidc(server: RunningServer, name: str) -> str:
    return f"{server.issuer}/protocol/openid-connect/{name}"


def login(server: RunningServer, username: str = "jane", **form: str) -> requests.Response:
    """Password grant; the demo users' passwords equal their usernames."""
    data = {"grant_type": "password", "username": username, "password": username, **CLIENT}
    return requests.post(oidc(server, "token"), data={**data, **form}, timeout=TIMEOUT)


def refresh(server: RunningServer, refresh_token: str) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **CLIENT}
    return requests.post(oidc(server, "token"), data=data, timeout=TIMEOUT)


def userinfo(server: RunningServer, access_token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(oidc(server, "userinfo"), headers=headers, timeout=TIMEOUT)


def fetch_jwks(server: RunningServer) -> dict[str, Any]:
    response = requests.get(oidc(server, "certs"), timeout=TIMEOUT)
    assert response.status_code == 200
    return response.json()


def verify(token: str, jwks: dict[str, Any], issuer: str, **options: Any) -> dict[str, Any]:
    """Verify like the API does: the one signing key named by kid, RS256, audience, issuer."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid and k["use"] == "sig")
    return jwt.decode(
        token, key, algorithms=["RS256"], audience="customer_api", issuer=issuer, **options
    )


def stats(server: RunningServer) -> dict[str, Any]:
    return requests.get(f"{server.url}/admin/stats", timeout=TIMEOUT).json()


def test_discovery_looks_like_keycloak(server: RunningServer) -> None:
    assert server.issuer == f"{server.url}/realms/donfiles"
    url = f"{server.issuer}/.well-known/openid-configuration"

    document = requests.get(url, timeout=TIMEOUT).json()

    assert document["issuer"] == server.issuer
    assert document["jwks_uri"] == oidc(server, "certs")
    assert document["token_endpoint"] == oidc(server, "token")
    assert document["userinfo_endpoint"] == oidc(server, "userinfo")
    assert document["revocation_endpoint"] == oidc(server, "revoke")
    assert document["end_session_endpoint"] == oidc(server, "logout")
    assert document["introspection_endpoint"] == oidc(server, "token/introspect")
    assert {"password", "refresh_token"} <= set(document["grant_types_supported"])
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]


def test_jwks_has_a_signing_and_an_encryption_key_and_counts_requests(
    server: RunningServer,
) -> None:
    before = stats(server)["jwks_requests"]

    keys = fetch_jwks(server)["keys"]

    assert stats(server)["jwks_requests"] == before + 1
    signing = [k for k in keys if k["use"] == "sig"]
    encryption = [k for k in keys if k["use"] == "enc"]
    assert len(signing) == 1
    assert len(encryption) == 1
    assert signing[0]["alg"] == "RS256"
    assert encryption[0]["alg"] == "RSA-OAEP"
    for key in keys:
        assert key["kty"] == "RSA"
        assert key["e"] == "AQAB"
        assert len(base64.urlsafe_b64decode(key["n"] + "==")) == 256
        assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()  # public halves only
    assert signing[0]["kid"] != encryption[0]["kid"]


def test_password_grant_returns_keycloak_tokens(server: RunningServer) -> None:
    response = login(server, scope="openid")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["refresh_expires_in"] == 1800
    assert body["not-before-policy"] == 0
    assert body["scope"] == "openid profile email"

    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "RS256", "typ": "JWT", "kid": header["kid"]}
    claims = verify(body["access_token"], fetch_jwks(server), server.issuer)
    assert claims["exp"] - claims["iat"] == 300
    assert claims["jti"]
    assert claims["aud"] == ["customer_api", "account"]
    assert claims["sub"] == JANE_SUB
    assert claims["typ"] == "Bearer"
    assert claims["azp"] == "customer_api"
    assert claims["sid"] == claims["session_state"] == body["session_state"]
    assert "customer" in claims["realm_access"]["roles"]
    assert "admin" not in claims["realm_access"]["roles"]
    assert claims["resource_access"]["customer_api"] == {"roles": ["customer"]}
    assert "manage-account" in claims["resource_access"]["account"]["roles"]
    assert claims["scope"] == "openid profile email"
    assert claims["preferred_username"] == "jane"
    assert claims["name"] == "Jane Wanjiku"
    assert claims["given_name"] == "Jane"
    assert claims["family_name"] == "Wanjiku"
    assert claims["email"] == "jane@example.com"
    assert claims["email_verified"] is True
    assert claims["phone_number"] == "+254712345678"

    refresh_header = jwt.get_unverified_header(body["refresh_token"])
    assert refresh_header["alg"] == "HS256"
    assert jwt.get_unverified_claims(body["refresh_token"])["typ"] == "Refresh"

    id_claims = jwt.decode(
        body["id_token"],
        fetch_jwks(server)["keys"][0],
        algorithms=["RS256"],
        audience="customer_api",
        issuer=server.issuer,
        access_token=body["access_token"],  # checks at_hash
    )
    assert id_claims["typ"] == "ID"
    assert id_claims["sub"] == JANE_SUB


def test_without_openid_scope_there_is_no_id_token(server: RunningServer) -> None:
    body = login(server).json()

    assert "id_token" not in body
    assert body["scope"] == "profile email"


def test_client_may_authenticate_with_http_basic(server: RunningServer) -> None:
    data = {"grant_type": "password", "username": "admin", "password": "admin"}
    auth = (CLIENT["client_id"], CLIENT["client_secret"])

    response = requests.post(oidc(server, "token"), data=data, auth=auth, timeout=TIMEOUT)

    assert response.status_code == 200
    claims = jwt.get_unverified_claims(response.json()["access_token"])
    assert "admin" in claims["realm_access"]["roles"]
    assert claims["phone_number"] == "+254700000001"


@pytest.mark.parametrize(("username", "password"), [("jane", "wrong"), ("nobody", "jane")])
def test_wrong_credentials_are_invalid_grant(
    server: RunningServer, username: str, password: str
) -> None:
    response = login(server, username, password=password)

    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid user credentials",
    }


@pytest.mark.parametrize(
    "client", [{**CLIENT, "client_secret": "nope"}, {**CLIENT, "client_id": "other"}, {}]
)
def test_bad_client_is_invalid_client(server: RunningServer, client: dict[str, str]) -> None:
    data = {"grant_type": "password", "username": "jane", "password": "jane", **client}

    response = requests.post(oidc(server, "token"), data=data, timeout=TIMEOUT)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_unsupported_grant_type(server: RunningServer) -> None:
    data = {"grant_type": "client_credentials", **CLIENT}

    response = requests.post(oidc(server, "token"), data=data, timeout=TIMEOUT)

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_refresh_works_until_the_refresh_token_is_revoked(server: RunningServer) -> None:
    tokens = login(server).json()

    refreshed = refresh(server, tokens["refresh_token"])
    assert refreshed.status_code == 200
    assert refreshed.json()["session_state"] == tokens["session_state"]
    assert refreshed.json()["access_token"] != tokens["access_token"]

    data = {"token": tokens["refresh_token"], "token_type_hint": "refresh_token", **CLIENT}
    revoked = requests.post(oidc(server, "revoke"), data=data, timeout=TIMEOUT)
    assert revoked.status_code == 200

    again = refresh(server, tokens["refresh_token"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("kind", ["garbage", "access token", "expired"])
def test_unusable_refresh_tokens_are_invalid_grant(
    server: RunningServer, idp: DevIdentityProvider, kind: str
) -> None:
    tokens = login(server).json()
    claims = jwt.get_unverified_claims(tokens["refresh_token"])
    refresh_header = jwt.get_unverified_header(tokens["refresh_token"])
    token = {
        "garbage": "not.a.token",
        "access token": tokens["access_token"],
        "expired": idp.sign({**claims, "exp": claims["iat"] - 10}, headers=refresh_header),
    }[kind]

    response = refresh(server, token)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_logout_ends_the_session(server: RunningServer) -> None:
    tokens = login(server).json()
    assert userinfo(server, tokens["access_token"]).status_code == 200

    data = {"refresh_token": tokens["refresh_token"], **CLIENT}
    response = requests.post(oidc(server, "logout"), data=data, timeout=TIMEOUT)

    assert response.status_code == 204
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert userinfo(server, tokens["access_token"]).status_code == 401
    again = requests.post(oidc(server, "logout"), data=data, timeout=TIMEOUT)
    assert again.status_code == 400


def test_userinfo(server: RunningServer) -> None:
    tokens = login(server).json()

    response = userinfo(server, tokens["access_token"])

    assert response.status_code == 200
    assert response.json() == {
        "sub": JANE_SUB,
        "email_verified": True,
        "name": "Jane Wanjiku",
        "phone_number": "+254712345678",
        "preferred_username": "jane",
        "given_name": "Jane",
        "family_name": "Wanjiku",
        "email": "jane@example.com",
    }


def test_userinfo_refuses_bad_tokens(server: RunningServer, idp: DevIdentityProvider) -> None:
    foreign = DevIdentityProvider(client_secret="s3cret")
    forged = idp.sign(idp.access_claims("jane"), key=foreign.private_key_pem)

    for token in ("", "not-a-token", forged):
        response = userinfo(server, token)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="donfiles"')


def test_revoking_an_access_token_leaves_the_session(server: RunningServer) -> None:
    tokens = login(server).json()
    data = {"token": tokens["access_token"], "token_type_hint": "access_token", **CLIENT}

    assert requests.post(oidc(server, "revoke"), data=data, timeout=TIMEOUT).status_code == 200

    assert userinfo(server, tokens["access_token"]).status_code == 401
    assert refresh(server, tokens["refresh_token"]).status_code == 200


def test_introspection(server: RunningServer) -> None:
    tokens = login(server).json()
    url = oidc(server, "token/introspect")

    active = requests.post(url, data={"token": tokens["access_token"], **CLIENT}, timeout=TIMEOUT)
    inactive = requests.post(url, data={"token": "nonsense", **CLIENT}, timeout=TIMEOUT)

    assert active.json()["active"] is True
    assert active.json()["username"] == "jane"
    assert inactive.json() == {"active": False}


def test_rotation_keeps_the_old_key_and_signs_with_the_new() -> None:
    idp = DevIdentityProvider(client_secret="s3cret")
    with idp.serve_in_thread() as server:
        old_token = login(server).json()["access_token"]
        old_kid = jwt.get_unverified_header(old_token)["kid"]

        rotated = requests.post(f"{server.url}/admin/rotate-keys", timeout=TIMEOUT).json()

        new_kid = rotated["kid"]
        assert new_kid != old_kid
        assert rotated["kids"] == [new_kid, old_kid]
        jwks = fetch_jwks(server)
        assert {k["kid"] for k in jwks["keys"] if k["use"] == "sig"} == {new_kid, old_kid}
        new_token = login(server).json()["access_token"]
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        assert verify(new_token, jwks, server.issuer)["sub"] == JANE_SUB
        assert verify(old_token, jwks, server.issuer)["sub"] == JANE_SUB

        url = f"{server.url}/admin/rotate-keys?drop_old=1"
        newest = requests.post(url, timeout=TIMEOUT).json()["kid"]
        signing = [k["kid"] for k in fetch_jwks(server)["keys"] if k["use"] == "sig"]
        assert signing == [newest]
        assert stats(server)["jwks_requests"] == 2


def test_helpers_mint_tokens_for_the_apis_tests(
    idp: DevIdentityProvider, server: RunningServer
) -> None:
    jwks = fetch_jwks(server)
    token = idp.issue_access_token("jane")
    assert verify(token, jwks, server.issuer)["sub"] == JANE_SUB

    expired = idp.issue_access_token("jane", exp=1)
    with pytest.raises(ExpiredSignatureError):
        verify(expired, jwks, server.issuer)

    other = jwt.get_unverified_claims(idp.issue_access_token("jane", sub="someone", roles=["x"]))
    assert other["sub"] == "someone"
    assert other["realm_access"]["roles"][-1] == "x"
    assert "customer_api" not in other["resource_access"]

    unsigned = idp.sign({"sub": "x"}, headers={"alg": "none"})
    assert unsigned.endswith(".")
    assert jwt.get_unverified_header(unsigned)["alg"] == "none"

    confused = idp.sign({"sub": "x"}, headers={"alg": "HS256"}, key=idp.public_key_pem)
    with pytest.raises(JWTError):
        verify(confused, jwks, server.issuer)
    assert idp.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert idp.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize("variable", ["APP_ENV", "FLASK_ENV"])
def test_refuses_to_run_in_production(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    idp: DevIdentityProvider,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, "production")

    with pytest.raises(ProductionRefusedError, match=variable):
        DevIdentityProvider()
    with pytest.raises(ProductionRefusedError):
        idp.serve_in_thread()
    assert main(["--port", "0"]) == 2
    assert "refuses to run" in capsys.readouterr().err


def test_demo_users_match_keycloaks_demo_users() -> None:
    """dev.idp's users are the ones `docker compose --profile dev` adds to the realm, whose
    clients put the same claims in tokens."""
    users = load_users()
    realm = json.loads((ROOT / "deploy/keycloak/realm-export.json").read_text())
    demo = json.loads((ROOT / "dev/keycloak/demo-users.json").read_text())
    exported = {user["username"]: user for user in demo["users"]}

    assert set(users) == {"admin", "jane"} == set(exported)
    for name, user in users.items():
        entry = exported[name]
        assert entry["id"] == user.sub
        assert entry["email"] == user.email
        assert f"{entry['firstName']} {entry['lastName']}" == user.name
        assert entry["attributes"]["phone_number"] == [user.phone_number]
        assert set(user.realm_roles) <= set(entry["realmRoles"])
        assert entry["clientRoles"] == {c: list(r) for c, r in user.client_roles.items()}
        assert entry["credentials"] == [
            {"type": "password", "value": user.password, "temporary": False}
        ]
    client = next(c for c in realm["clients"] if c["clientId"] == "customer_api")
    mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
    assert mappers["oidc-audience-mapper"]["included.client.audience"] == "customer_api"
    assert mappers["oidc-usermodel-attribute-mapper"]["claim.name"] == "phone_number"
