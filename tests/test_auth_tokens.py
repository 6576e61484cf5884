"""Bearer tokens are verified locally against the provider's JWKS: hostile tokens get a 401
with no data, no token gets UNAUTHENTICATED, and the key cache spares the provider."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from common.settings import Settings
from dev.idp import DevIdentityProvider, RunningServer
from models.db import db
from tests.silent import SilentServer, returns
from web import create_app
from web.tokens import JWKS_TTL_SECONDS, JWKSCache

JANE_SUB = "2c95d280-3560-4991-af5d-d592b6982eb4"
ME = "{ me { id } }"
CHALLENGE = 'Bearer error="invalid_token"'
MODERN = "application/graphql-response+json"


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def post(app: Flask, token: str | None, query: str = ME, variables: dict | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"query": query, "variables": variables or {}}
    return app.test_client().post("/graphql", json=body, headers=headers)


def assert_refused(response) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    # In the media type the client prefers (the test client's Accept prefers the new one).
    assert response.headers["Content-Type"] == f"{MODERN}; charset=utf-8"
    assert response.get_json() == {
        "errors": [
            {
                "message": "The access token is invalid or expired.",
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ]
    }


def assert_accepted(response) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert "errors" not in body, body
    assert body["data"]["me"] is not None


def dispose(application: Flask) -> None:
    with application.app_context():
        for engine in db.engines.values():
            engine.dispose()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def verifying_app(settings: Settings) -> Iterator[Flask]:
    """An app of its own, so the unknown kids sent here never touch the shared app's cache."""
    application = create_app(settings)
    yield application
    dispose(application)


@pytest.fixture(scope="module")
def foreign_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


# -- hostile tokens ---------------------------------------------------------------------------


def _claims(idp: DevIdentityProvider, **overrides: Any) -> dict[str, Any]:
    return idp.access_claims("jane", **overrides)


def _now() -> int:
    return int(time.time())


def _enc_kid(idp: DevIdentityProvider) -> str:
    return next(key["kid"] for key in idp.jwks()["keys"] if key["use"] == "enc")


HOSTILE: dict[str, Callable[[DevIdentityProvider, rsa.RSAPrivateKey], str]] = {
    "malformed-one-segment": lambda idp, _: "garbage",
    "malformed-three-segments": lambda idp, _: "not.a.token",
    "malformed-header-not-json": lambda idp, _: (
        f"{b64(b'{oops')}.{b64(_claims(idp))}.{b64(b'signature')}"
    ),
    "alg-none": lambda idp, _: idp.sign(_claims(idp), {"alg": "none"}),
    "alg-None": lambda idp, _: idp.sign(_claims(idp), {"alg": "None"}),
    "hs256-keyed-with-public-pem": lambda idp, _: idp.sign(
        _claims(idp), {"alg": "HS256"}, key=idp.public_key_pem
    ),
    "foreign-key-under-known-kid": lambda idp, foreign: idp.sign(_claims(idp), key=foreign),
    "expired-beyond-leeway": lambda idp, _: idp.sign(
        _claims(idp, exp=_now() - 45, iat=_now() - 345)
    ),
    "nbf-beyond-leeway": lambda idp, _: idp.sign(_claims(idp, nbf=_now() + 45)),
    "wrong-issuer": lambda idp, _: idp.sign(
        _claims(idp, iss=idp.issuer.replace("/realms/donfiles", "/realms/other"))
    ),
    "missing-aud": lambda idp, _: idp.sign(_claims(idp, aud=None)),
    "aud-only-account": lambda idp, _: idp.sign(_claims(idp, aud="account")),
    "aud-only-account-list": lambda idp, _: idp.sign(_claims(idp, aud=["account"])),
    "typ-refresh": lambda idp, _: idp.sign(_claims(idp, typ="Refresh")),
    "typ-id": lambda idp, _: idp.sign(_claims(idp, typ="ID")),
    "no-typ-claim": lambda idp, _: idp.sign(_claims(idp, typ=None)),
    "azp-another-client": lambda idp, _: idp.sign(_claims(idp, azp="account-console")),
    "real-refresh-token": lambda idp, _: idp.issue_tokens("jane", "openid")["refresh_token"],
    "real-id-token": lambda idp, _: idp.issue_tokens("jane", "openid")["id_token"],
    "jwe-five-segments": lambda idp, _: ".".join(
        [b64({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": idp.active_kid}), *[b64(b"x" * 16)] * 4]
    ),
    "20kb-validly-signed": lambda idp, _: idp.sign(_claims(idp, padding="x" * 20_000)),
    "missing-exp": lambda idp, _: idp.sign(_claims(idp, exp=None)),
    "missing-iat": lambda idp, _: idp.sign(_claims(idp, iat=None)),
    "missing-sub": lambda idp, _: idp.sign(_claims(idp, sub=None)),
    "empty-sub": lambda idp, _: idp.sign(_claims(idp, sub="")),
    "missing-kid": lambda idp, _: idp.sign(_claims(idp), {"kid": None}),
    "kid-of-the-encryption-key": lambda idp, _: idp.sign(
        _claims(idp),
        {"kid": _enc_kid(idp)},
        # Signed with the encryption key itself: only the key's `use` tells it apart.
        key=idp._encryption_key.private,
    ),
    "header-alg-not-a-string": lambda idp, _: _alg_list_token(idp),
}


def _alg_list_token(idp: DevIdentityProvider) -> str:
    # sign() cannot sign with a list as alg: put a real RS256 signature under such a header.
    _, payload, signature = idp.sign(_claims(idp)).split(".")
    header = b64({"alg": ["RS256"], "typ": "JWT", "kid": idp.active_kid})
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_token_is_refused_with_401_and_no_data(verifying_app, idp, foreign_key, case):
    token = HOSTILE[case](idp, foreign_key)

    assert_refused(post(verifying_app, token))


def test_the_unaltered_claims_are_accepted(verifying_app, idp, session):
    # The hostile cases above each change one thing in exactly these claims.
    assert_accepted(post(verifying_app, idp.sign(_claims(idp))))


def test_token_expired_within_the_leeway_is_accepted(verifying_app, idp, session):
    token = idp.sign(_claims(idp, exp=_now() - 10, iat=_now() - 310))

    assert_accepted(post(verifying_app, token))


def test_token_not_yet_valid_within_the_leeway_is_accepted(verifying_app, idp, session):
    token = idp.sign(_claims(idp, nbf=_now() + 10))

    assert_accepted(post(verifying_app, token))


@pytest.mark.parametrize(
    "overrides",
    [{"aud": "customer_api"}, {"aud": ["account", "customer_api"]}, {"azp": None}],
    ids=["aud-a-string", "aud-among-others", "no-azp-claim"],
)
def test_acceptable_variations_are_accepted(verifying_app, idp, session, overrides):
    assert_accepted(post(verifying_app, idp.sign(_claims(idp, **overrides))))


def test_audience_comes_from_oidc_audience_when_set(settings, idp, session):
    application = create_app(replace(settings, oidc_audience="orders-api"))
    try:
        assert_accepted(post(application, idp.sign(_claims(idp, aud=["orders-api", "account"]))))
        assert_refused(post(application, idp.sign(_claims(idp))))  # aud: customer_api, account
    finally:
        dispose(application)


def test_keys_come_from_oidc_jwks_url_when_set(settings, idp, own_idp, session):
    # Trust the session provider's issuer, but take keys from another provider's JWKS.
    application = create_app(replace(settings, oidc_jwks_url=jwks_url(own_idp)))
    try:
        assert_accepted(post(application, own_idp.sign(_claims(idp))))
        assert_refused(post(application, idp.sign(_claims(idp))))
    finally:
        dispose(application)


def test_just_under_8_kb_is_accepted(verifying_app, idp, session):
    base = len(idp.sign(_claims(idp)))
    token = idp.sign(_claims(idp, padding="x" * ((8 * 1024 - base) * 3 // 4 - 40)))
    assert 7 * 1024 < len(token) <= 8 * 1024

    assert_accepted(post(verifying_app, token))


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer   ", "Basic amFuZTpqYW5l", "Token abc"],
    ids=["bearer-without-token", "bearer-blank", "basic", "unknown-scheme"],
)
def test_unusable_authorization_header_is_refused(verifying_app, header):
    response = verifying_app.test_client().post(
        "/graphql", json={"query": ME}, headers={"Authorization": header}
    )

    assert_refused(response)


# -- a refused token and the fields that need none ----------------------------------------------

LOGIN = 'mutation { login(input: {username: "jane", password: "jane"}) { success accessToken } }'
REFRESH = (
    "mutation($t: String!) { refreshToken(input: {refreshToken: $t}) { success accessToken } }"
)


def _expired(idp: DevIdentityProvider, **claims: Any) -> str:
    """An access token of jane's that expired a minute ago, past the leeway."""
    return idp.sign(_claims(idp, exp=_now() - 60, iat=_now() - 360, **claims))


def test_an_expired_token_does_not_stop_its_own_refresh(verifying_app, idp, session):
    # A client that sends its token with every request, as Apollo Client's link does.
    refresh = idp.issue_tokens("jane")["refresh_token"]

    response = post(verifying_app, _expired(idp), REFRESH, {"t": refresh})

    assert response.status_code == 200, response.get_data(as_text=True)
    renewed = response.get_json()["data"]["refreshToken"]
    assert renewed["success"] is True
    assert_accepted(post(verifying_app, renewed["accessToken"]))


@pytest.mark.parametrize(
    "case", ["expired-beyond-leeway", "aud-only-account", "alg-none", "malformed-one-segment"]
)
def test_a_refused_token_does_not_stop_a_login(verifying_app, idp, foreign_key, session, case):
    response = post(verifying_app, HOSTILE[case](idp, foreign_key), LOGIN)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["data"]["login"]["success"] is True


@pytest.mark.parametrize(
    "query",
    [
        "mutation($t: String!) { ...Refresh } "
        "fragment Refresh on Mutation { refreshToken(input: {refreshToken: $t}) { success } }",
        "mutation($t: String!) { __typename ... on Mutation { "
        "refreshToken(input: {refreshToken: $t}) { success } } }",
        'query Type { __typename } mutation Other { logout(refreshToken: "x") { success } }',
        "mutation($t: String!) { ...Refresh ...Refresh } "
        "fragment Refresh on Mutation { refreshToken(input: {refreshToken: $t}) { success } }",
    ],
    ids=["fragment", "inline-fragment", "named-among-others", "fragment-twice"],
)
def test_a_refused_token_does_not_stop_an_operation_of_tokenless_fields(
    verifying_app, idp, session, query
):
    refresh = idp.issue_tokens("jane")["refresh_token"]
    body = {"query": query, "variables": {"t": refresh}}
    if "query Type" in query:
        body["operationName"] = "Type"

    response = verifying_app.test_client().post(
        "/graphql", json=body, headers={"Authorization": f"Bearer {_expired(idp)}"}
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert "errors" not in response.get_json()


def test_an_expired_token_does_not_stop_a_refresh_by_persisted_query(verifying_app, idp, session):
    # Apollo's persisted-query link sends the hash alone first, then hash and document.
    document = f"# {uuid.uuid4().hex}\n{REFRESH}"
    extensions = {
        "persistedQuery": {
            "version": 1,
            "sha256Hash": hashlib.sha256(document.encode()).hexdigest(),
        }
    }
    variables = {"t": idp.issue_tokens("jane")["refresh_token"]}
    client = verifying_app.test_client()
    headers = {"Authorization": f"Bearer {_expired(idp)}", "Accept": "application/json"}

    by_hash = client.post(
        "/graphql", json={"extensions": extensions, "variables": variables}, headers=headers
    )
    in_full = client.post(
        "/graphql",
        json={"query": document, "extensions": extensions, "variables": variables},
        headers=headers,
    )

    assert by_hash.status_code == 200
    [asked] = by_hash.get_json()["errors"]
    assert asked["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert in_full.status_code == 200
    assert in_full.get_json()["data"]["refreshToken"]["success"] is True


def test_a_refused_token_is_ignored_never_trusted(verifying_app, idp, admin):
    stranger = str(uuid.uuid4())
    token = _expired(idp, sub=stranger)

    signed_in = post(verifying_app, token, LOGIN).get_json()["data"]["login"]
    introduced = post(verifying_app, token, "{ __typename }").get_json()

    assert signed_in["success"] is True
    assert introduced == {"data": {"__typename": "Query"}}
    # Nobody became the token's subject: it named no one.
    found = admin.execute("query($id: ID!) { customer(id: $id) { id } }", {"id": stranger})
    assert found["customer"] is None


@pytest.mark.parametrize(
    "query",
    [
        ME,
        "{ __typename me { id } }",
        'mutation { login(input: {username: "jane", password: "jane"}) { success } '
        'logout(refreshToken: "x") { success } }',
        'mutation { refreshToken(input: {refreshToken: "x"}) { success } '
        "createOrder(input: {price: 10}) { success } }",
        'mutation { ...Out } fragment Out on Mutation { logout(refreshToken: "x") { success } }',
        "query A { __typename } query B { me { id } }",
        "{",
        "mutation { ...Nowhere }",
    ],
    ids=[
        "me",
        "typename-and-me",
        "login-and-logout",
        "refresh-and-create",
        "fragment-with-logout",
        "no-operation-named",
        "syntax-error",
        "unknown-fragment",
    ],
)
def test_a_refused_token_stops_every_other_request(verifying_app, idp, query):
    assert_refused(post(verifying_app, _expired(idp), query))


def test_a_refused_token_gets_no_graphiql_page(verifying_app, idp):
    response = verifying_app.test_client().get(
        "/graphql", headers={"Accept": "text/html", "Authorization": f"Bearer {_expired(idp)}"}
    )

    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_a_refused_token_stops_a_request_that_is_no_graphql_request(verifying_app, idp):
    response = verifying_app.test_client().post(
        "/graphql",
        data="{ me { id } }",
        content_type="text/plain",
        headers={"Authorization": f"Bearer {_expired(idp)}"},
    )

    assert_refused(response)


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (f"{MODERN}, application/json", MODERN),
        ("application/json", "application/json"),
        (None, "application/json"),
        ("text/html", "application/json"),  # takes neither: the 401 still says why
    ],
)
def test_the_401_is_a_graphql_error_in_the_media_type_negotiated(verifying_app, accept, media):
    client = verifying_app.test_client()
    if accept is None:
        client.environ_base.pop("HTTP_ACCEPT")
    headers = {"Authorization": "Bearer junk", **({"Accept": accept} if accept else {})}

    response = client.post("/graphql", json={"query": ME}, headers=headers)

    assert response.status_code == 401
    assert response.headers["Content-Type"] == f"{media}; charset=utf-8"
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    [error] = response.get_json()["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}


def test_refused_token_creates_no_customer(verifying_app, idp, admin):
    sub = str(uuid.uuid4())
    assert_refused(post(verifying_app, idp.sign(_claims(idp, sub=sub, aud="account"))))

    found = admin.execute("query($id: ID!) { customer(id: $id) { id } }", {"id": sub})["customer"]

    assert found is None


# -- no token -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("{ me { id } }", "me"),
        ("{ userInfo { userId } }", "userInfo"),
        (f'{{ order(id: "{uuid.uuid4()}") {{ id }} }}', "order"),
        ('{ customerByCode(code: "X") { id } }', "customerByCode"),
    ],
)
def test_no_token_on_a_nullable_field_is_unauthenticated_and_null(graphql, query, field):
    response = graphql(None).post(query)

    assert response.status_code == 200
    body = response.get_json()
    assert body["data"] == {field: None}
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAUTHENTICATED"]
    assert body["errors"][0]["path"] == [field]


@pytest.mark.parametrize(
    "query",
    [
        "{ allCustomers { id } }",
        "{ allOrders { id } }",
        "{ myOrders { id } }",
        "{ customers { nodes { id } } }",
        "mutation { createOrder(input: {price: 10}) { success } }",
        'mutation { createCustomer(input: {name: "X"}) { success } }',
        f'mutation {{ confirmOrder(orderId: "{uuid.uuid4()}") {{ success }} }}',
        'mutation { logout(refreshToken: "x") { success } }',
    ],
)
def test_no_token_on_a_required_field_is_unauthenticated_without_data(graphql, query):
    response = graphql(None).post(query)

    assert response.status_code == 200
    body = response.get_json()
    # A required list nulls the whole answer; a mutation's payload, only its own field.
    assert body["data"] is None or set(body["data"].values()) == {None}
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAUTHENTICATED"]


def test_no_token_login_works(graphql):
    data = graphql(None).execute(
        'mutation { login(input: {username: "jane", password: "jane"}) '
        "{ success accessToken userInfo { userId } } }"
    )["login"]

    assert data["success"] is True
    assert data["accessToken"]
    assert data["userInfo"] == {"userId": JANE_SUB}


def test_no_token_refresh_token_works(graphql, idp):
    refresh = idp.issue_tokens("jane")["refresh_token"]

    data = graphql(None).execute(
        "mutation($t: String!) { refreshToken(input: {refreshToken: $t}) { success accessToken } }",
        {"t": refresh},
    )["refreshToken"]

    assert data["success"] is True
    assert data["accessToken"]


# -- the JWKS cache -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_idp() -> Iterator[DevIdentityProvider]:
    """A provider of this module's own, so rotating its keys disturbs no other test."""
    provider = DevIdentityProvider(client_id="customer_api", client_secret="test-secret")
    with provider.serve_in_thread(host="127.0.0.1", port=0):
        yield provider


def settings_for(settings: Settings, provider: DevIdentityProvider) -> Settings:
    return replace(settings, oidc_issuer=provider.issuer, oidc_jwks_url=None)


@pytest.fixture
def fresh_app(settings: Settings, own_idp: DevIdentityProvider) -> Iterator[Flask]:
    """A new app, with an empty key cache, trusting `own_idp`."""
    application = create_app(settings_for(settings, own_idp))
    yield application
    dispose(application)


def test_ten_requests_fetch_the_jwks_once(fresh_app, own_idp, session):
    before = own_idp.jwks_requests

    for _ in range(10):
        assert_accepted(post(fresh_app, own_idp.issue_access_token("jane")))

    assert own_idp.jwks_requests - before == 1


def test_concurrent_first_requests_all_wait_for_the_first_jwks_fetch(fresh_app, own_idp, committed):
    tokens = [own_idp.issue_access_token("jane") for _ in range(10)]
    before = own_idp.jwks_requests
    barrier = threading.Barrier(10)

    def send(token: str) -> int:
        client = fresh_app.test_client()
        barrier.wait()
        return client.post(
            "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"}
        ).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(send, tokens))

    assert statuses == [200] * 10
    assert own_idp.jwks_requests - before <= 2


def test_rotated_key_is_accepted_after_exactly_one_more_fetch(fresh_app, own_idp, session):
    old_token = own_idp.issue_access_token("jane")
    assert_accepted(post(fresh_app, old_token))
    before = own_idp.jwks_requests

    own_idp.rotate_keys()
    for _ in range(5):
        assert_accepted(post(fresh_app, own_idp.issue_access_token("jane")))
    assert_accepted(post(fresh_app, old_token))

    assert own_idp.jwks_requests - before == 1


def test_key_dropped_from_the_jwks_stops_verifying_after_the_next_fetch(
    fresh_app, own_idp, session
):
    old_token = own_idp.issue_access_token("jane")
    assert_accepted(post(fresh_app, old_token))

    own_idp.rotate_keys(drop_old=True)
    assert_accepted(post(fresh_app, own_idp.issue_access_token("jane")))

    assert_refused(post(fresh_app, old_token))


def _unknown_kid_token(provider: DevIdentityProvider) -> str:
    return provider.sign(provider.access_claims("jane"), {"kid": uuid.uuid4().hex})


def test_hundred_unknown_kids_cause_at_most_three_fetches(fresh_app, own_idp):
    before = own_idp.jwks_requests

    for _ in range(100):
        assert_refused(post(fresh_app, _unknown_kid_token(own_idp)))

    assert own_idp.jwks_requests - before <= 3


def test_hundred_concurrent_unknown_kids_cause_at_most_three_fetches(fresh_app, own_idp):
    tokens = [_unknown_kid_token(own_idp) for _ in range(100)]
    before = own_idp.jwks_requests
    barrier = threading.Barrier(10)

    def send(batch: list[str]) -> list[int]:
        client = fresh_app.test_client()
        barrier.wait()
        return [
            client.post(
                "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"}
            ).status_code
            for token in batch
        ]

    with ThreadPoolExecutor(10) as pool:
        statuses = [
            s for batch in pool.map(send, [tokens[i::10] for i in range(10)]) for s in batch
        ]

    assert statuses == [401] * 100
    assert own_idp.jwks_requests - before <= 3


def test_unknown_kid_flood_leaves_known_keys_working_without_fetching(fresh_app, own_idp, session):
    assert_accepted(post(fresh_app, own_idp.issue_access_token("jane")))
    for _ in range(20):
        post(fresh_app, _unknown_kid_token(own_idp))
    before = own_idp.jwks_requests

    assert_accepted(post(fresh_app, own_idp.issue_access_token("jane")))

    assert own_idp.jwks_requests == before


@pytest.fixture
def doomed_idp() -> Iterator[tuple[DevIdentityProvider, RunningServer]]:
    """A provider this test may shut down."""
    provider = DevIdentityProvider(client_id="customer_api", client_secret="test-secret")
    server = provider.serve_in_thread(host="127.0.0.1", port=0)
    yield provider, server
    server.shutdown()  # safe to repeat: a second shutdown of a stopped server returns at once


def test_provider_down_after_first_fetch_keeps_old_keys(settings, doomed_idp, session):
    provider, server = doomed_idp
    application = create_app(settings_for(settings, provider))
    try:
        token = provider.issue_access_token("jane")
        assert_accepted(post(application, token))

        server.shutdown()
        assert_accepted(post(application, token))
        provider.rotate_keys()
        assert_refused(post(application, provider.issue_access_token("jane")))  # fetch fails

        assert_accepted(post(application, token))
    finally:
        dispose(application)


# -- the cache itself, with a clock of our own ------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwks_url(provider: DevIdentityProvider) -> str:
    return f"{provider.issuer}/protocol/openid-connect/certs"


def test_keys_are_cached_for_ten_minutes(own_idp):
    clock = Clock()
    cache = JWKSCache(lambda: jwks_url(own_idp), clock=clock)
    before = own_idp.jwks_requests

    assert cache.key(own_idp.active_kid) is not None
    clock.now += JWKS_TTL_SECONDS - 1
    assert cache.key(own_idp.active_kid) is not None
    assert own_idp.jwks_requests - before == 1

    clock.now += 2
    assert cache.key(own_idp.active_kid) is not None
    assert own_idp.jwks_requests - before == 2


def test_unknown_kid_refetch_waits_ten_seconds(own_idp):
    clock = Clock()
    cache = JWKSCache(lambda: jwks_url(own_idp), clock=clock)
    cache.key(own_idp.active_kid)
    clock.now += 1
    before = own_idp.jwks_requests

    assert cache.key("unknown-1") is None
    assert cache.key("unknown-2") is None
    clock.now += 9
    assert cache.key("unknown-3") is None
    assert own_idp.jwks_requests - before == 1

    clock.now += 1
    assert cache.key("unknown-4") is None
    assert own_idp.jwks_requests - before == 2


def test_encryption_key_is_never_a_signing_key(own_idp):
    cache = JWKSCache(lambda: jwks_url(own_idp), clock=Clock())

    assert cache.key(own_idp.active_kid) is not None
    assert cache.key(_enc_kid(own_idp)) is None


def test_stale_keys_survive_a_failed_refetch(own_idp):
    clock = Clock()
    url = {"value": jwks_url(own_idp)}
    cache = JWKSCache(lambda: url["value"], clock=clock)
    key = cache.key(own_idp.active_kid)

    url["value"] = f"http://127.0.0.1:{closed_port()}/certs"
    clock.now += JWKS_TTL_SECONDS + 1

    assert cache.key(own_idp.active_kid) == key


def test_a_hanging_jwks_fetch_is_given_up_and_the_keys_kept(own_idp):
    clock = Clock()
    url = {"value": jwks_url(own_idp)}
    cache = JWKSCache(lambda: url["value"], clock=clock)
    key = cache.key(own_idp.active_kid)
    silent = SilentServer()  # takes the connection, never answers
    try:
        url["value"] = silent.url("http", "/certs")
        clock.now += JWKS_TTL_SECONDS + 1

        found = returns(lambda: cache.key(own_idp.active_kid), "a JWKS fetch that hangs")
        silent.wait_for_hang_up()  # the cache stopped waiting: its own timeout
    finally:
        silent.close()

    assert silent.bytes_received > 0  # it did ask
    assert found == key
