"""A small Keycloak-shaped OpenID Connect provider for development and tests; never for production.

It serves one realm the way Keycloak does (discovery, JWKS, the token endpoint with the password and
refresh_token grants, userinfo, introspection, revocation and logout) plus two dev-only endpoints,
``POST /admin/rotate-keys`` and ``GET /admin/stats``. Run it with ``python -m dev.idp`` or embed it
in tests with ``DevIdentityProvider().serve_in_thread()``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask import Flask, Response, jsonify, request
from jose import jwt
from jose.exceptions import ExpiredSignatureError, JOSEError
from werkzeug import serving

from dev import (
    PathOnlyRequestHandler,
    ProductionRefusedError,
    ServerThread,
    base_url,
    refuse_production,
)

DEFAULT_USERS_FILE = Path(__file__).with_name("users.json")
ACCOUNT_ROLES = ("manage-account", "manage-account-links", "view-profile")
SUPPORTED_SCOPES = ("openid", "profile", "email", "phone")
_RSA_HASHES = {"RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}
_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


class OAuthError(Exception):
    """An OAuth error, answered as Keycloak does: a status and JSON `error`/`error_description`."""

    def __init__(
        self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """Render the error as a Flask response."""
        resp = jsonify(error=self.error, error_description=self.description)
        resp.status_code = self.status
        resp.headers.update(self.headers)
        return resp


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _jws(header: Mapping[str, Any], claims: Mapping[str, Any], key: Any) -> str:
    # Hand-rolled rather than python-jose so tests can also mint the hostile shapes jose refuses
    # to produce: alg "none", or an HMAC keyed with a PEM public key.
    def part(value: Mapping[str, Any]) -> str:
        return _b64(json.dumps(value, separators=(",", ":")).encode())

    signing_input = f"{part(header)}.{part(claims)}".encode("ascii")
    alg = str(header.get("alg"))
    if alg in _RSA_HASHES:
        if isinstance(key, str | bytes):
            pem = key.encode() if isinstance(key, str) else key
            key = serialization.load_pem_private_key(pem, password=None)
        signature = key.sign(signing_input, padding.PKCS1v15(), _RSA_HASHES[alg]())
    elif alg in _HMAC_HASHES:
        secret = key.encode() if isinstance(key, str) else key
        signature = hmac.new(secret, signing_input, _HMAC_HASHES[alg]).digest()
    elif alg.lower() == "none":
        signature = b""
    else:
        raise ValueError(f"cannot sign with alg {alg!r}")
    return f"{signing_input.decode('ascii')}.{_b64(signature)}"


@dataclass(frozen=True)
class _RsaKey:
    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> _RsaKey:
        return cls(secrets.token_urlsafe(32), rsa.generate_private_key(65537, 2048))

    @property
    def private_pem(self) -> str:
        encoding, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
        return self.private.private_bytes(encoding, fmt, serialization.NoEncryption()).decode()

    @property
    def public_pem(self) -> str:
        encoding, fmt = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        return self.private.public_key().public_bytes(encoding, fmt).decode()

    def jwk(self, use: str, alg: str) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        n, e = _b64_uint(numbers.n), _b64_uint(numbers.e)
        return {"kid": self.kid, "kty": "RSA", "alg": alg, "use": use, "n": n, "e": e}


@dataclass(frozen=True)
class DevUser:
    """A user of the dev realm, as listed in users.json."""

    username: str
    password: str = field(repr=False)
    sub: str
    name: str
    email: str
    phone_number: str | None = None
    email_verified: bool = True
    enabled: bool = True
    realm_roles: tuple[str, ...] = ()
    client_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DevUser:
        """Build a user from one users.json entry."""
        client_roles = {c: tuple(roles) for c, roles in data.get("client_roles", {}).items()}
        realm_roles = tuple(data.get("realm_roles", ()))
        username = data["username"].lower()
        # Unknown keys raise TypeError, so a typo in users.json fails loudly.
        return cls(
            **{
                **data,
                "username": username,
                "realm_roles": realm_roles,
                "client_roles": client_roles,
            }
        )

    def profile_claims(self) -> dict[str, Any]:
        """The profile, email and phone claims Keycloak's default mappers put in tokens."""
        given, _, family = self.name.partition(" ")
        claims = {
            "email_verified": self.email_verified,
            "name": self.name,
            "phone_number": self.phone_number,
            "preferred_username": self.username,
            "given_name": given,
            "family_name": family,
            "email": self.email,
        }
        return {k: v for k, v in claims.items() if v not in (None, "")}


def load_users(source: str | os.PathLike[str] | Iterable[Any] | None = None) -> dict[str, DevUser]:
    """Read users from a users.json path (default dev/users.json) or a list of dicts/DevUsers."""
    if source is None or isinstance(source, str | os.PathLike):
        data = json.loads(Path(source or DEFAULT_USERS_FILE).read_text(encoding="utf-8"))
        source = data["users"] if isinstance(data, dict) else data
    users = [u if isinstance(u, DevUser) else DevUser.from_dict(u) for u in source]
    return {user.username: user for user in users}


@dataclass
class _Session:
    sid: str
    username: str
    scope: str
    started: int = field(default_factory=lambda: int(time.time()))


class RunningServer(ServerThread):
    """A provider served from a background thread."""

    def __init__(self, server: serving.BaseWSGIServer, *, url: str, issuer: str) -> None:
        super().__init__(server, url=url, name=f"dev-idp-{server.server_port}")
        self.issuer = issuer


class DevIdentityProvider:
    """An in-memory Keycloak look-alike for one realm and one confidential client."""

    def __init__(
        self,
        users: str | os.PathLike[str] | Iterable[Any] | None = None,
        *,
        realm: str = "donfiles",
        client_id: str = "customer_api",
        client_secret: str | None = "dev-secret",  # noqa: S107 - the documented dev secret
        access_token_lifespan: int = 300,
        refresh_token_lifespan: int = 1800,
        public_url: str | None = None,
    ) -> None:
        refuse_production("dev.idp", "point the service at a real Keycloak instead")
        self.users = load_users(users)
        self.realm = realm
        self.client_id = client_id
        self.client_secret = client_secret  # None makes the client public: no secret checked
        self.access_token_lifespan = access_token_lifespan
        self.refresh_token_lifespan = refresh_token_lifespan
        self.base_url = (public_url or "http://127.0.0.1:8080").rstrip("/")
        self._fixed_url = public_url is not None
        self._lock = threading.Lock()
        self._signing_keys = [_RsaKey.generate()]
        self._encryption_key = _RsaKey.generate()
        # Keycloak signs refresh tokens with a realm HMAC secret that never leaves the server.
        self._hmac_kid = str(uuid.uuid4())
        self._hmac_secret = secrets.token_hex(32)
        self._sessions: dict[str, _Session] = {}
        self._revoked_jtis: set[str] = set()
        self.jwks_requests = 0
        self.token_requests = 0
        self.logout_requests = 0  # the logout and revocation endpoints together
        self.app = self._create_app()

    # -- keys and signing ---------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The realm's issuer URL, e.g. http://127.0.0.1:8080/realms/donfiles."""
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def active_kid(self) -> str:
        """The kid of the key that signs new tokens."""
        return self._signing_keys[0].kid

    @property
    def kids(self) -> list[str]:
        """The kids of all signing keys in the JWKS, active first."""
        return [key.kid for key in self._signing_keys]

    @property
    def private_key_pem(self) -> str:
        """The active signing key as PKCS#8 PEM."""
        return self._signing_keys[0].private_pem

    @property
    def public_key_pem(self) -> str:
        """The active signing key's public half as SubjectPublicKeyInfo PEM."""
        return self._signing_keys[0].public_pem

    def rotate_keys(self, *, drop_old: bool = False) -> str:
        """Make a new RSA key the active signing key and return its kid; older keys stay in
        the JWKS (so tokens they signed still verify) unless `drop_old`."""
        key = _RsaKey.generate()
        with self._lock:
            self._signing_keys = [key] if drop_old else [key, *self._signing_keys]
        return key.kid

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set served at .../certs: the signing keys and the encryption key."""
        keys = [key.jwk("sig", "RS256") for key in self._signing_keys]
        return {"keys": [*keys, self._encryption_key.jwk("enc", "RSA-OAEP")]}

    def sign(
        self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None, key: Any = None
    ) -> str:
        """Sign `claims` as a compact JWS, by default RS256 with the active key and its kid.

        `headers` are merged over ``{"alg", "typ", "kid"}`` (a None value drops a header). `key` is
        a PEM or cryptography private key for RS*, a secret for HS* (a PEM public key works, for
        alg-confusion tests), and is ignored for alg "none"."""
        header = {"alg": "RS256", "typ": "JWT", "kid": self.active_kid, **(headers or {})}
        header = {name: value for name, value in header.items() if value is not None}
        if key is None:
            hmac_alg = str(header["alg"]).upper().startswith("HS")
            key = self._hmac_secret if hmac_alg else self._signing_keys[0].private
        return _jws(header, claims, key)

    # -- sessions and tokens ------------------------------------------------------------------

    def check_password(self, username: str, password: str) -> DevUser | None:
        """Return the user if username (case-insensitive) and password match, in constant time."""
        user = self.users.get(username.strip().lower())
        expected = user.password if user is not None else secrets.token_hex(16)
        # Comparing digests hides the password's length as well as its content.
        matches = hmac.compare_digest(
            hashlib.sha256(password.encode()).digest(), hashlib.sha256(expected.encode()).digest()
        )
        return user if user is not None and matches else None

    def _user(self, username: str) -> DevUser:
        return self.users[username.lower()]

    def _new_session(self, user: DevUser, scope: str) -> _Session:
        session = _Session(str(uuid.uuid4()), user.username, scope)
        with self._lock:
            self._sessions[session.sid] = session
        return session

    def _access_claims(
        self, user: DevUser, session: _Session, now: int, roles: Iterable[str] | None = None
    ) -> dict[str, Any]:
        default_roles = [f"default-roles-{self.realm}", "offline_access", "uma_authorization"]
        realm_roles = user.realm_roles if roles is None else tuple(roles)
        client_roles = {c: {"roles": list(rs)} for c, rs in user.client_roles.items() if rs}
        if roles is not None:
            client_roles = {}
        return {
            "exp": now + self.access_token_lifespan,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": [self.client_id, "account"],
            "sub": user.sub,
            "typ": "Bearer",
            "azp": self.client_id,
            "sid": session.sid,
            "session_state": session.sid,
            "acr": "1",
            "realm_access": {"roles": [*default_roles, *realm_roles]},
            "resource_access": {**client_roles, "account": {"roles": list(ACCOUNT_ROLES)}},
            "scope": session.scope,
            **user.profile_claims(),
        }

    def access_claims(
        self,
        username: str,
        scope: str = "openid profile email",
        roles: Iterable[str] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Claims of a new access token for `username` in a new session. `roles` replaces the
        user's realm and client roles; `overrides` replace claims (None removes one)."""
        user = self._user(username)
        session = self._new_session(user, scope)
        claims = self._access_claims(user, session, int(time.time()), roles)
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def issue_access_token(self, username: str, **claim_overrides: Any) -> str:
        """An access token for `username` as the token endpoint mints it, after the
        `access_claims` overrides (`scope`, `roles`, any claim)."""
        return self.sign(self.access_claims(username, **claim_overrides))

    def issue_tokens(self, username: str, scope: str = "openid profile email") -> dict[str, Any]:
        """Log `username` in without a password; return the token endpoint's JSON body."""
        user = self._user(username)
        return self._token_response(user, self._new_session(user, scope))

    def _token_response(self, user: DevUser, session: _Session) -> dict[str, Any]:
        now = int(time.time())
        access_token = self.sign(self._access_claims(user, session, now))
        common = {"iat": now, "iss": self.issuer, "sub": user.sub, "azp": self.client_id}
        session_claims = {"sid": session.sid, "session_state": session.sid}
        refresh_claims = {
            "exp": now + self.refresh_token_lifespan,
            "jti": str(uuid.uuid4()),
            "aud": self.issuer,
            "typ": "Refresh",
            "scope": session.scope,
            **common,
            **session_claims,
        }
        body: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": self.access_token_lifespan,
            "refresh_expires_in": self.refresh_token_lifespan,
            "refresh_token": self.sign(refresh_claims, {"alg": "HS256", "kid": self._hmac_kid}),
            "token_type": "Bearer",
        }
        if "openid" in session.scope.split():
            body["id_token"] = self.sign(
                {
                    "exp": now + self.access_token_lifespan,
                    "auth_time": session.started,
                    "jti": str(uuid.uuid4()),
                    "aud": self.client_id,
                    "typ": "ID",
                    "at_hash": _b64(hashlib.sha256(access_token.encode()).digest()[:16]),
                    "acr": "1",
                    **common,
                    **session_claims,
                    **user.profile_claims(),
                }
            )
        tail = {"not-before-policy": 0, "session_state": session.sid, "scope": session.scope}
        return {**body, **tail}

    def _decode(self, token: str) -> dict[str, Any]:
        # Each kid admits exactly one algorithm, so a token cannot pick its own verification.
        kid = jwt.get_unverified_header(token).get("kid")
        if kid == self._hmac_kid:
            key, alg = self._hmac_secret, "HS256"
        else:
            matching = [k.public_pem for k in self._signing_keys if k.kid == kid]
            if not matching:
                raise JOSEError("unknown kid")
            key, alg = matching[0], "RS256"
        options = {"verify_aud": False, "verify_at_hash": False}
        return jwt.decode(token, key, algorithms=[alg], issuer=self.issuer, options=options)

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """Check an access token as Keycloak's userinfo does (signature, expiry, issuer, typ,
        live session, not revoked) and return its claims, else raise a 401 `OAuthError`."""
        try:
            claims = self._decode(token)
        except JOSEError:
            claims = {}
        live = claims.get("sid") in self._sessions and claims.get("jti") not in self._revoked_jtis
        if claims.get("typ") != "Bearer" or not live:
            raise self._bearer_error("invalid_token", "Token verification failed")
        return claims

    def _verify_refresh_token(self, token: str | None) -> _Session:
        try:
            claims = self._decode(token or "")
        except ExpiredSignatureError:
            raise OAuthError(400, "invalid_grant", "Token is not active") from None
        except JOSEError:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token") from None
        if claims.get("typ") != "Refresh" or claims.get("azp") != self.client_id:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token")
        session = self._sessions.get(claims.get("sid", ""))
        if session is None:
            raise OAuthError(400, "invalid_grant", "Session not active")
        return session

    def revoke_session(self, sid: str) -> bool:
        """End a session: its refresh tokens stop working and its access tokens fail userinfo."""
        with self._lock:
            return self._sessions.pop(sid, None) is not None

    def revoke_token(self, token: str) -> bool:
        """RFC 7009 revocation: a refresh token ends its session, an access token dies by jti."""
        try:
            claims = self._decode(token)
        except JOSEError:
            return False
        if claims.get("typ") == "Refresh":
            return self.revoke_session(claims.get("sid", ""))
        if claims.get("typ") == "Bearer" and "jti" in claims:
            with self._lock:
                self._revoked_jtis.add(claims["jti"])
            return True
        return False

    def stats(self) -> dict[str, Any]:
        """Counters for tests: JWKS, token and logout requests, live sessions and the signing
        kids."""
        with self._lock:
            return {
                "jwks_requests": self.jwks_requests,
                "token_requests": self.token_requests,
                "logout_requests": self.logout_requests,
                "active_sessions": len(self._sessions),
                "active_kid": self.active_kid,
                "kids": self.kids,
            }

    def discovery(self) -> dict[str, Any]:
        """The realm's .well-known/openid-configuration document."""
        oidc = f"{self.issuer}/protocol/openid-connect"
        auth_methods = ["client_secret_basic", "client_secret_post"]
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{oidc}/token",
            "introspection_endpoint": f"{oidc}/token/introspect",
            "userinfo_endpoint": f"{oidc}/userinfo",
            "end_session_endpoint": f"{oidc}/logout",
            "jwks_uri": f"{oidc}/certs",
            "revocation_endpoint": f"{oidc}/revoke",
            "grant_types_supported": ["password", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "scopes_supported": list(SUPPORTED_SCOPES),
        }

    # -- HTTP ----------------------------------------------------------------------------------

    def _create_app(self) -> Flask:
        app = Flask(__name__)
        app.json.sort_keys = False  # type: ignore[attr-defined]  # keep Keycloak's field order
        base = f"/realms/{self.realm}"
        oidc = f"{base}/protocol/openid-connect"
        routes = [
            (f"{base}/.well-known/openid-configuration", self._discovery, ["GET"]),
            (f"{oidc}/certs", self._certs, ["GET"]),
            (f"{oidc}/token", self._token, ["POST"]),
            (f"{oidc}/token/introspect", self._introspect, ["POST"]),
            (f"{oidc}/userinfo", self._userinfo, ["GET", "POST"]),
            (f"{oidc}/revoke", self._revoke, ["POST"]),
            (f"{oidc}/logout", self._logout, ["POST"]),
            ("/admin/rotate-keys", self._admin_rotate_keys, ["POST"]),
            ("/admin/stats", lambda: jsonify(self.stats()), ["GET"]),
        ]
        for rule, view, methods in routes:
            app.add_url_rule(rule, endpoint=rule, view_func=view, methods=methods)
        app.register_error_handler(OAuthError, OAuthError.response)
        return app

    def _discovery(self) -> Response:
        return jsonify(self.discovery())

    @staticmethod
    def _no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    def _bearer_error(self, error: str, description: str) -> OAuthError:
        challenge = f'Bearer realm="{self.realm}", error="{error}", '
        challenge += f'error_description="{description}"'
        return OAuthError(401, error, description, {"WWW-Authenticate": challenge})

    def _authenticate_client(self) -> None:
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            # RFC 6749 2.3.1: Basic credentials are form-urlencoded before base64.
            client_id, secret = unquote_plus(auth.username or ""), unquote_plus(auth.password or "")
        else:
            client_id = request.form.get("client_id", "")
            secret = request.form.get("client_secret", "")
        secret_ok = self.client_secret is None or hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        )
        if client_id != self.client_id or not secret_ok:
            raise OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")

    def _granted_scope(self, requested: str | None) -> str:
        asked = (requested or "").split()
        if any(scope not in SUPPORTED_SCOPES for scope in asked):
            raise OAuthError(400, "invalid_scope", f"Invalid scopes: {requested}")
        # profile and email are the client's default scopes: Keycloak grants them unasked.
        return " ".join(s for s in SUPPORTED_SCOPES if s in asked or s in ("profile", "email"))

    def _certs(self) -> Response:
        with self._lock:
            self.jwks_requests += 1
        response = jsonify(self.jwks())
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _token(self) -> Response:
        with self._lock:
            self.token_requests += 1
        form = request.form
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        self._authenticate_client()
        if grant_type == "password":
            user = self.check_password(form.get("username", ""), form.get("password", ""))
            if user is None:
                raise OAuthError(401, "invalid_grant", "Invalid user credentials")
            if not user.enabled:
                raise OAuthError(400, "invalid_grant", "Account disabled")
            session = self._new_session(user, self._granted_scope(form.get("scope")))
        elif grant_type == "refresh_token":
            session = self._verify_refresh_token(form.get("refresh_token"))
            user = self._user(session.username)
        else:
            raise OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
        return self._no_store(jsonify(self._token_response(user, session)))

    def _userinfo(self) -> Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = request.form.get("access_token", "") if request.method == "POST" else ""
        if not token:
            raise self._bearer_error("invalid_request", "Token not provided")
        claims = self.verify_access_token(token.strip())
        user = next((u for u in self.users.values() if u.sub == claims.get("sub")), None)
        if user is None:
            raise self._bearer_error("invalid_token", "User not found")
        return jsonify({"sub": user.sub, **user.profile_claims()})

    def _introspect(self) -> Response:
        self._authenticate_client()
        try:
            claims = self._decode(request.form.get("token", ""))
        except JOSEError:
            return jsonify(active=False)
        if claims.get("sid") not in self._sessions or claims.get("jti") in self._revoked_jtis:
            return jsonify(active=False)
        extra = {"client_id": claims.get("azp"), "username": claims.get("preferred_username")}
        return jsonify({**claims, **extra, "active": True})

    def _revoke(self) -> Response:
        with self._lock:
            self.logout_requests += 1
        self._authenticate_client()
        token = request.form.get("token")
        if not token:
            raise OAuthError(400, "invalid_request", "Token not provided")
        if request.form.get("token_type_hint") not in (None, "", "access_token", "refresh_token"):
            raise OAuthError(400, "unsupported_token_type", "Unsupported token type")
        self.revoke_token(token)  # RFC 7009 2.2: unknown or invalid tokens also get a 200
        return self._no_store(Response(status=200))

    def _logout(self) -> Response:
        with self._lock:
            self.logout_requests += 1
        self._authenticate_client()
        token = request.form.get("refresh_token")
        if not token:
            raise OAuthError(400, "invalid_request", "No refresh token")
        self.revoke_session(self._verify_refresh_token(token).sid)
        return Response(status=204)

    def _admin_rotate_keys(self) -> Response:
        drop_old = request.args.get("drop_old", "").lower() in ("1", "true", "yes")
        kid = self.rotate_keys(drop_old=drop_old)
        return jsonify(kid=kid, kids=self.kids)

    # -- serving -------------------------------------------------------------------------------

    def bind(self, host: str = "127.0.0.1", port: int = 0) -> serving.BaseWSGIServer:
        """Bind a threaded werkzeug server; unless `public_url` was given, the issuer follows
        the bound address."""
        refuse_production("dev.idp", "point the service at a real Keycloak instead")
        server = serving.make_server(
            host, port, self.app, threaded=True, request_handler=PathOnlyRequestHandler
        )
        if not self._fixed_url:
            self.base_url = base_url(host, server.server_port)
        return server

    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
        """Serve over HTTP from a daemon thread (port 0 picks a free port)."""
        server = self.bind(host, port)
        return RunningServer(server, url=self.base_url, issuer=self.issuer)


def _banner(idp: DevIdentityProvider) -> str:
    lines = [
        "dev.idp: a Keycloak-shaped identity provider for DEVELOPMENT ONLY",
        f"  issuer:    {idp.issuer}",
        f"  discovery: {idp.issuer}/.well-known/openid-configuration",
        f"  client:    {idp.client_id} (secret: {idp.client_secret or '-'})",
        "  users (username / password):",
    ]
    for user in idp.users.values():
        realm_roles = ", ".join(user.realm_roles) or "-"
        client_roles = ", ".join(f"{c}:{r}" for c, rs in user.client_roles.items() for r in rs)
        lines.append(
            f"    {user.username} / {user.password}   realm roles: {realm_roles};"
            f" client roles: {client_roles or '-'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve the provider until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m dev.idp", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--users", default=str(DEFAULT_USERS_FILE), help="users.json path")
    parser.add_argument("--realm", default="donfiles")
    parser.add_argument("--client-id", default="customer_api")
    parser.add_argument("--client-secret", default="dev-secret")
    parser.add_argument("--access-token-lifespan", type=int, default=300, help="seconds")
    parser.add_argument("--refresh-token-lifespan", type=int, default=1800, help="seconds")
    parser.add_argument(
        "--public-url", help="base URL clients use, e.g. http://idp:8080 (default: bound address)"
    )
    args = parser.parse_args(argv)
    try:
        idp = DevIdentityProvider(
            args.users,
            realm=args.realm,
            client_id=args.client_id,
            client_secret=args.client_secret,
            access_token_lifespan=args.access_token_lifespan,
            refresh_token_lifespan=args.refresh_token_lifespan,
            public_url=args.public_url,
        )
        server = idp.bind(args.host, args.port)
    except ProductionRefusedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(_banner(idp), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
