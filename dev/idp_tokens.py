"""The keys, sessions and tokens of dev.idp's realm, without HTTP: what its endpoints issue and
check, signed and exported with python-jose as Keycloak's would be."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.exceptions import ExpiredSignatureError, JOSEError
from jose.utils import base64url_encode

from dev.idp_users import DevUser, load_users

ACCOUNT_ROLES = ("manage-account", "manage-account-links", "view-profile")
SUPPORTED_SCOPES = ("openid", "profile", "email", "phone")


class OAuthError(Exception):
    """An OAuth error as Keycloak answers it: an HTTP status, `error`, `error_description`."""

    def __init__(
        self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class RealmKey:
    """One RSA key pair of the realm, named by its kid, for one `use` ("sig" or "enc")."""

    kid: str
    alg: str
    use: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, alg: str = "RS256", use: str = "sig") -> RealmKey:
        """A fresh 2048-bit key; python-jose signs and exports keys but does not make them."""
        return cls(secrets.token_urlsafe(32), alg, use, rsa.generate_private_key(65537, 2048))

    @property
    def jose_key(self) -> Any:
        """The key as python-jose's RSAKey for its own alg."""
        return jwk.construct(self.private, self.alg)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as served in the JWKS: kid, kty, alg, use, n, e."""
        return {"kid": self.kid, "use": self.use, **self.jose_key.public_key().to_dict()}


def _unsigned(header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    # python-jose refuses to make alg "none" tokens; there is nothing to sign, only to encode.
    def part(value: Mapping[str, Any]) -> str:
        return base64url_encode(json.dumps(value, separators=(",", ":")).encode()).decode()

    return f"{part(header)}.{part(claims)}."


@dataclass
class Session:
    """A login: refresh tokens carry its sid, and ending it ends them."""

    sid: str
    username: str
    scope: str
    started: int = field(default_factory=lambda: int(time.time()))


class TokenIssuer:
    """One realm's users, signing keys and sessions, and the tokens minted from them."""

    def __init__(
        self,
        users: str | os.PathLike[str] | Iterable[Any] | None = None,
        *,
        realm: str,
        client_id: str,
        access_token_lifespan: int,
        refresh_token_lifespan: int,
        base_url: str,
    ) -> None:
        self.users = load_users(users)
        self.realm = realm
        self.client_id = client_id
        self.access_token_lifespan = access_token_lifespan
        self.refresh_token_lifespan = refresh_token_lifespan
        self.base_url = base_url.rstrip("/")
        self._lock = threading.Lock()
        self._signing_keys = [RealmKey.generate()]
        # Keycloak's JWKS lists an encryption key too; clients must not verify with it.
        self._encryption_key = RealmKey.generate("RSA-OAEP", "enc")
        # Keycloak signs refresh tokens with a realm HMAC secret that never leaves the server.
        self._hmac_kid = str(uuid.uuid4())
        self._hmac_secret = secrets.token_hex(32)
        self._sessions: dict[str, Session] = {}
        self._revoked_jtis: set[str] = set()

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
        return self._signing_keys[0].jose_key.to_pem().decode()

    @property
    def public_key_pem(self) -> str:
        """The active signing key's public half as SubjectPublicKeyInfo PEM."""
        return self._signing_keys[0].jose_key.public_key().to_pem().decode()

    @property
    def active_sessions(self) -> int:
        """How many sessions are live (logged in, not logged out or revoked)."""
        return len(self._sessions)

    def rotate_keys(self, *, drop_old: bool = False) -> str:
        """Make a new RSA key the active signing key and return its kid; older keys stay in
        the JWKS (so tokens they signed still verify) unless `drop_old`."""
        key = RealmKey.generate()
        with self._lock:
            self._signing_keys = [key] if drop_old else [key, *self._signing_keys]
        return key.kid

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set served at .../certs: the signing keys and the encryption key."""
        return {"keys": [key.public_jwk() for key in [*self._signing_keys, self._encryption_key]]}

    def sign(
        self,
        claims: Mapping[str, Any],
        headers: Mapping[str, Any] | None = None,
        key: Any = None,
        *,
        access_token: str | None = None,
    ) -> str:
        """Sign `claims` as a compact JWS, by default RS256 with the active key under its kid.

        `headers` go over ``{"alg": "RS256", "typ": "JWT", "kid": <active kid>}`` (a None kid
        drops it). `key` is anything python-jose signs with (PEM, JWK, cryptography key) for
        RS*, the secret for HS* (a PEM public key works, for alg-confusion tests), and is
        ignored for alg "none". `access_token` adds the `at_hash` an ID token carries."""
        header = {"kid": self.active_kid, **(headers or {})}
        alg = str(header.pop("alg", None) or "RS256")
        header = {name: value for name, value in header.items() if value is not None}
        if alg.lower() == "none":
            return _unsigned({"alg": alg, "typ": "JWT", **header}, claims)
        if alg.upper().startswith("HS"):
            key = self._hmac_secret if key is None else key
            if isinstance(key, str | bytes):
                # As a JWK any bytes are a secret: python-jose refuses a PEM given as a plain one.
                secret = key.encode() if isinstance(key, str) else key
                key = {"kty": "oct", "k": base64url_encode(secret).decode()}
        elif key is None:
            key = self._signing_keys[0].private
        return jwt.encode(
            dict(claims), key, algorithm=alg, headers=header, access_token=access_token
        )

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

    def user(self, username: str) -> DevUser:
        """The user named `username` (case-insensitive); KeyError if there is none."""
        return self.users[username.lower()]

    def new_session(self, user: DevUser, scope: str) -> Session:
        """Log `user` in with the granted `scope`."""
        session = Session(str(uuid.uuid4()), user.username, scope)
        with self._lock:
            self._sessions[session.sid] = session
        return session

    def _access_claims(
        self, user: DevUser, session: Session, now: int, roles: Iterable[str] | None = None
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
        user = self.user(username)
        session = self.new_session(user, scope)
        claims = self._access_claims(user, session, int(time.time()), roles)
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def issue_access_token(self, username: str, **claim_overrides: Any) -> str:
        """An access token for `username` as the token endpoint mints it, after the
        `access_claims` overrides (`scope`, `roles`, any claim)."""
        return self.sign(self.access_claims(username, **claim_overrides))

    def issue_tokens(self, username: str, scope: str = "openid profile email") -> dict[str, Any]:
        """Log `username` in without a password; return the token endpoint's JSON body."""
        user = self.user(username)
        return self.token_response(user, self.new_session(user, scope))

    def token_response(self, user: DevUser, session: Session) -> dict[str, Any]:
        """The token endpoint's JSON body for `session`: access, refresh and (with the openid
        scope) ID token."""
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
            id_claims = {
                "exp": now + self.access_token_lifespan,
                "auth_time": session.started,
                "jti": str(uuid.uuid4()),
                "aud": self.client_id,
                "typ": "ID",
                "acr": "1",
                **common,
                **session_claims,
                **user.profile_claims(),
            }
            body["id_token"] = self.sign(id_claims, access_token=access_token)
        tail = {"not-before-policy": 0, "session_state": session.sid, "scope": session.scope}
        return {**body, **tail}

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of a token this realm signed (any typ), else a JOSEError."""
        # Each kid admits exactly one algorithm, so a token cannot pick its own verification.
        kid = jwt.get_unverified_header(token).get("kid")
        if kid == self._hmac_kid:
            key, alg = self._hmac_secret, "HS256"
        else:
            matching = [k.public_jwk() for k in self._signing_keys if k.kid == kid]
            if not matching:
                raise JOSEError("unknown kid")
            key, alg = matching[0], "RS256"
        options = {"verify_aud": False, "verify_at_hash": False}
        return jwt.decode(token, key, algorithms=[alg], issuer=self.issuer, options=options)

    def bearer_error(self, error: str, description: str) -> OAuthError:
        """A 401 with the WWW-Authenticate challenge Keycloak's userinfo answers with."""
        challenge = f'Bearer realm="{self.realm}", error="{error}", '
        challenge += f'error_description="{description}"'
        return OAuthError(401, error, description, {"WWW-Authenticate": challenge})

    def is_live(self, claims: Mapping[str, Any]) -> bool:
        """Whether the session of these claims is live and their token not revoked."""
        return claims.get("sid") in self._sessions and claims.get("jti") not in self._revoked_jtis

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """Check an access token as Keycloak's userinfo does (signature, expiry, issuer, typ,
        live session, not revoked) and return its claims, else raise a 401 `OAuthError`."""
        try:
            claims = self.decode(token)
        except JOSEError:
            claims = {}
        if claims.get("typ") != "Bearer" or not self.is_live(claims):
            raise self.bearer_error("invalid_token", "Token verification failed")
        return claims

    def verify_refresh_token(self, token: str | None) -> Session:
        """The live session of a refresh token, else a 400 `invalid_grant` `OAuthError`."""
        try:
            claims = self.decode(token or "")
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
            claims = self.decode(token)
        except JOSEError:
            return False
        if claims.get("typ") == "Refresh":
            return self.revoke_session(claims.get("sid", ""))
        if claims.get("typ") == "Bearer" and "jti" in claims:
            with self._lock:
                self._revoked_jtis.add(claims["jti"])
            return True
        return False
