"""Bearer token verification against the identity provider's JWKS, entirely local.

Keys are cached for 10 minutes. A token naming an unknown `kid` may trigger one refetch per
10 seconds (one fetch in flight at a time), so a flood of forged kids cannot hammer the
provider; a failed fetch keeps the keys we had.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from jose import jwt
from jose.backends import RSAKey
from jose.exceptions import JOSEError

from models.validation import storable

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 8 * 1024
VERIFIED_TOKENS_KEPT = 2048
MAX_SUBJECT = 255  # OIDC caps sub at 255 ASCII characters
LEEWAY_SECONDS = 30
JWKS_TTL_SECONDS = 600
UNKNOWN_KID_COOLDOWN_SECONDS = 10
FETCH_TIMEOUT_SECONDS = 3
# Asymmetric only: never `none`, never HS* (an HS token "signed" with our public key as the
# secret would otherwise verify).
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


class InvalidToken(Exception):
    """The token is not acceptable; the message says why (for logs, never for the client)."""


def require_cryptography_backend() -> None:
    """Refuse to run on python-jose's pure-Python crypto fallback."""
    if RSAKey is None or RSAKey.__module__ != "jose.backends.cryptography_backend":
        raise RuntimeError(
            "python-jose is not using the 'cryptography' backend; install python-jose[cryptography]"
        )


class JWKSCache:
    """Signing keys from a JWKS URL, by `kid`."""

    def __init__(
        self,
        url: Callable[[], str],
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._session = session or requests.Session()
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._last_miss: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def key(self, kid: str) -> dict[str, Any] | None:
        """The signing key named `kid`, refetching the set when stale or (rarely) on a miss."""
        now = self._clock()
        if not self._keys:
            self._fetch(now, wait=True)  # nothing cached yet: everyone waits for one fetch
        elif self._stale(now) and _elapsed(now, self._last_attempt, UNKNOWN_KID_COOLDOWN_SECONDS):
            self._fetch(now, wait=False)  # one thread refreshes, the others use what we have
        elif kid not in self._keys and _elapsed(now, self._last_miss, UNKNOWN_KID_COOLDOWN_SECONDS):
            self._last_miss = now
            self._fetch(now, wait=False)
        return self._keys.get(kid)

    def knows(self, kid: str) -> bool:
        """Whether `kid` is among the signing keys we hold (no fetch)."""
        return kid in self._keys

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= JWKS_TTL_SECONDS

    def _fetch(self, now: float, *, wait: bool) -> None:
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if self._last_attempt is not None and (
                self._last_attempt >= now  # another thread fetched while we waited
                or (
                    not _elapsed(now, self._last_attempt, UNKNOWN_KID_COOLDOWN_SECONDS)
                    and not self._keys
                )  # and failed just now: fail fast, don't queue up
            ):
                return
            self._last_attempt = self._clock()
            self.fetches += 1
            try:
                response = self._session.get(self._url(), timeout=FETCH_TIMEOUT_SECONDS)
                response.raise_for_status()
                keys = response.json()["keys"]
                signing = {
                    key["kid"]: key
                    for key in keys
                    if isinstance(key, dict) and key.get("kid") and key.get("use", "sig") == "sig"
                }
                if not signing:
                    raise ValueError("the key set has no signing keys")
            except (requests.RequestException, ValueError, KeyError, TypeError) as error:
                log.warning("JWKS fetch failed, keeping %d cached keys: %s", len(self._keys), error)
                return
            self._keys = signing
            self._fetched_at = self._last_attempt
        finally:
            self._lock.release()


def _elapsed(now: float, since: float | None, seconds: float) -> bool:
    return since is None or now - since >= seconds


class RecentTokens:
    """What was worked out for each of the most recently used tokens, least recent dropped
    first; safe to share between threads."""

    def __init__(self, size: int = VERIFIED_TOKENS_KEPT) -> None:
        self.size = size
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Any:
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def put(self, token: str, entry: Any) -> None:
        with self._lock:
            self._entries[token] = entry
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)


@dataclass
class TokenVerifier:
    """Checks a bearer token's signature and claims; returns the claims.

    A client sends the same token with every request until it expires, so a verified token
    is remembered (by its exact text) until its `exp`, as long as its key is still published.
    """

    keys: JWKSCache
    issuer: str
    audience: str
    authorized_parties: frozenset[str]
    _verified: RecentTokens = field(default_factory=RecentTokens, repr=False)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or InvalidToken."""
        remembered = self._verified.get(token)
        if remembered is not None:
            kid, claims = remembered
            if time.time() <= claims["exp"] + LEEWAY_SECONDS and self.keys.knows(kid):
                return claims
        kid, claims = self._verify(token)
        self._verified.put(token, (kid, claims))
        return claims

    def _verify(self, token: str) -> tuple[str, dict[str, Any]]:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("token too large")
        if token.count(".") != 2:
            raise InvalidToken("not a signed JWT (JWE or malformed)")
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as error:
            raise InvalidToken(f"malformed header: {error}") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in ALLOWED_ALGORITHMS:
            raise InvalidToken(f"algorithm {algorithm!r} not allowed")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no kid")
        key = self.keys.key(kid)
        if key is None:
            raise InvalidToken("unknown kid")
        if key.get("kty") != KEY_TYPES[algorithm[:2]] or key.get("alg", algorithm) != algorithm:
            raise InvalidToken("key does not match the algorithm")
        try:
            claims = jwt.decode(
                token,
                key,  # one key, chosen by kid: never "try every key of the set"
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require_exp": True,
                    "require_iat": True,
                    "require_sub": True,
                    "require_iss": True,
                    "require_aud": True,
                    "leeway": LEEWAY_SECONDS,
                    "verify_at_hash": False,
                },
            )
        except JOSEError as error:
            raise InvalidToken(str(error)) from None
        # Keycloak marks its tokens: only access tokens are bearer credentials, and a token
        # that does not say what it is may be an ID or refresh token of another issuer's kind.
        if claims.get("typ") != "Bearer":
            raise InvalidToken(f"token type {claims.get('typ')!r} is not an access token")
        # python-jose ignores azp. The audience alone admits any client of the realm that an
        # audience mapper lets name this API: the client a token was issued to must be one
        # this API accepts.
        party = claims.get("azp")
        if "azp" in claims and not (isinstance(party, str) and party in self.authorized_parties):
            raise InvalidToken(f"authorized party {party!r} is not accepted")
        subject = claims.get("sub")
        # The subject keys the caller's customer row, so it must be text PostgreSQL can hold.
        if (
            not isinstance(subject, str)
            or not 1 <= len(subject) <= MAX_SUBJECT
            or not storable(subject)
        ):
            raise InvalidToken("no usable subject")
        if not isinstance(claims.get("exp"), int | float):
            raise InvalidToken("exp is not a number")
        return kid, claims


def roles_from_claims(claims: dict[str, Any], client_id: str) -> frozenset[str]:
    """The union of realm roles and this client's roles, as Keycloak puts them."""
    roles: set[str] = set()
    realm = claims.get("realm_access")
    if isinstance(realm, dict) and isinstance(realm.get("roles"), list):
        roles.update(role for role in realm["roles"] if isinstance(role, str))
    resource = claims.get("resource_access")
    client = resource.get(client_id) if isinstance(resource, dict) else None
    if isinstance(client, dict) and isinstance(client.get("roles"), list):
        roles.update(role for role in client["roles"] if isinstance(role, str))
    return frozenset(roles)
