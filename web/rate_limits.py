"""Rate limits on what a caller can spend of someone else's: the shop's SMS budget (mutations
that send an SMS, per caller), a user's sign-in (login attempts per username from one address,
per username from every address, and per client address) and the identity provider's time
(refreshToken and logout per client address), all checked before the provider hears of them.

Flask-Limiter counts in the service's Redis, shared by every process; while Redis is down each
process counts in its own memory (Flask-Limiter's fallback), so limits hold and requests go on.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time

from flask import Flask, current_app, g
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from flask_limiter.util import get_remote_address
from graphql import GraphQLError
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from common.settings import Settings

log = logging.getLogger(__name__)

# A check must never wait long on a dead Redis: one short try, then the in-memory fallback.
REDIS_TIMEOUT = 0.25
RATE_LIMITED = "RATE_LIMITED"
# How long an address a user signed in from stays exempt from the limit of every address.
KNOWN_ADDRESS_SECONDS = 30 * 24 * 3600


class RateLimitedError(GraphQLError):
    """Too many requests of one kind; `retryAfter` says in how many seconds to try again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(
            f"{message}; try again in {retry_after} s.",
            extensions={"code": RATE_LIMITED, "retryAfter": retry_after},
        )


def client_address() -> str:
    """The caller's address as the limits key it (`request.remote_addr`, which a trusted
    proxy's ProxyFix sets): an IPv6 caller by its /64, since one subscriber holds them all."""
    address = get_remote_address()
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def username_key(username: str) -> str:
    """A username as the limits key it: as the provider matches it (case-insensitive), hashed
    so neither Redis nor a log line holds what someone typed (perhaps a password)."""
    return hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]


def _storage_uri(redis_url: str) -> str:
    # `limits` names a Unix socket redis+unix://; redis:// and rediss:// it takes as they are.
    return "redis+" + redis_url if redis_url.startswith("unix://") else redis_url


class RateLimits:
    """The limits of one app. Each limit is checked on its own line below: Flask-Limiter
    registers a limit used as a context manager under the line that enters it."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.limiter = Limiter(
            key_func=get_remote_address,
            storage_uri=_storage_uri(settings.redis_url),
            storage_options={
                "key_prefix": settings.rate_limit_prefix,
                "socket_connect_timeout": REDIS_TIMEOUT,
                "socket_timeout": REDIS_TIMEOUT,
                "retry": Retry(NoBackoff(), 0),  # type: ignore[dict-item]
                **settings.redis_ssl,
            },
            # Exact: a cap of N lets N through in any window, also when requests straddle a
            # window's edge (a sliding counter then weighs the earlier ones down and lets more
            # in). It keeps at most N timestamps per key, and these limits are small.
            strategy="moving-window",
            in_memory_fallback_enabled=True,
        )
        self.limiter.init_app(app)
        self._sms = self.limiter.shared_limit(
            settings.sms_rate_limit, scope="sms", key_func=lambda: g.rate_limit_caller
        )
        self._login_address = self.limiter.shared_limit(
            settings.login_address_rate_limit, scope="login-address", key_func=client_address
        )
        self._login_username_address = self.limiter.shared_limit(
            settings.login_rate_limit,
            scope="login-username-address",
            key_func=lambda: f"{g.login_username}@{client_address()}",
        )
        self._login_username = self.limiter.shared_limit(
            settings.login_username_rate_limit,
            scope="login-username",
            key_func=lambda: g.login_username,
        )
        self._session_address = self.limiter.shared_limit(
            settings.session_address_rate_limit, scope="session-address", key_func=client_address
        )
        self._persisting = self.limiter.shared_limit(
            settings.persisted_query_rate_limit,
            scope="persisted-query",
            key_func=lambda: g.rate_limit_caller,
        )

    def count_sms(self, caller: str) -> None:
        """Count one SMS-sending mutation of `caller` (a subject); RateLimitedError once it
        has used SMS_RATE_LIMIT."""
        g.rate_limit_caller = caller
        try:
            with self._sms:  # entering counts one; past the limit it raises
                pass
        except RateLimitExceeded as exceeded:
            who = f"caller {caller}"
            raise self._refused(exceeded, who, "Too many orders and order changes") from None

    def count_login(self, username: str) -> None:
        """Count one sign-in attempt for `username` from this address; RateLimitedError, and
        no call to the identity provider, past LOGIN_ADDRESS_RATE_LIMIT, LOGIN_RATE_LIMIT or
        LOGIN_USERNAME_RATE_LIMIT."""
        g.login_username = username_key(username)
        refused = "Too many sign-in attempts"
        address = client_address()
        try:
            with self._login_address:
                pass
        except RateLimitExceeded as exceeded:
            raise self._refused(exceeded, f"address {address}", refused) from None
        # The limit of one address first: an attempt it refuses must not count toward the
        # limit of every address, or one stranger could fill that alone.
        who = f"username #{g.login_username[:8]}"
        try:
            with self._login_username_address:
                pass
        except RateLimitExceeded as exceeded:
            raise self._refused(exceeded, f"{who} from address {address}", refused) from None
        counted = list(self.limiter.current_limits)
        g.login_address_key = f"known-address:{g.login_username}:{address}"
        if self._known(g.login_address_key):
            # An address the user signed in from lately: strangers' guesses from elsewhere,
            # which fill the limit of every address, must not lock the user out of it.
            g.login_username_limits = counted
            return
        try:
            with self._login_username:
                pass
        except RateLimitExceeded as exceeded:
            raise self._refused(exceeded, f"{who} from every address", refused) from None
        g.login_username_limits = counted + list(self.limiter.current_limits)

    def _known(self, key: str) -> bool:
        try:
            return bool(self.limiter.storage.get(key))
        except RedisError:  # unknown while Redis is away: the limit of every address holds
            return False

    def count_session(self) -> None:
        """Count one refreshToken or logout from this address; RateLimitedError, and no call
        to the identity provider, past SESSION_ADDRESS_RATE_LIMIT."""
        try:
            with self._session_address:
                pass
        except RateLimitExceeded as exceeded:
            who = f"address {client_address()}"
            raise self._refused(exceeded, who, "Too many token refreshes and sign-outs") from None

    def may_persist(self, caller: str) -> bool:
        """Count one document `caller` (a subject) asks to keep as a persisted query; False
        past PERSISTED_QUERY_RATE_LIMIT: the document still runs, and is not kept."""
        g.rate_limit_caller = caller
        try:
            with self._persisting:
                return True
        except RateLimitExceeded:
            log.warning("persisted query not kept: caller %s is past its limit", caller)
            return False

    def login_succeeded(self) -> None:
        """Forget the username's earlier attempts from this address and from every address,
        as the provider forgets its failures on a success: only failures in a row count
        against a user. Other addresses' own counts for the username stay."""
        for checked in g.pop("login_username_limits", ()):
            try:
                checked.limiter.clear(checked.limit, *checked.request_args)
            except RedisError as error:  # the next check falls back to memory
                log.warning("could not reset a login limit: %s", error)
        if key := g.pop("login_address_key", None):
            try:
                self.limiter.storage.incr(key, KNOWN_ADDRESS_SECONDS)
            except RedisError as error:
                log.warning("could not remember a sign-in address: %s", error)

    def _refused(self, exceeded: RateLimitExceeded, who: str, message: str) -> GraphQLError:
        log.warning("rate limited: %s, %s of %s", who, exceeded.limit.limit, exceeded.limit.scope)
        return RateLimitedError(message, _retry_after(self.limiter.current_limit, exceeded))

    def close(self) -> None:
        """Close the connections to Redis (tests build many apps)."""
        connection = getattr(self.limiter.storage, "storage", None)
        if connection is not None:
            connection.close()


def _retry_after(breached: RequestLimit | None, exceeded: RateLimitExceeded) -> int:
    """Whole seconds until the breached limit lets one more request through."""
    try:
        reset_at = breached.window.reset_time if breached else None
    except RedisError:
        reset_at = None
    if reset_at is None:
        return int(exceeded.limit.limit.get_expiry())
    return max(1, math.ceil(reset_at - time.time()))


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["rate_limits"] = RateLimits(app, settings)


def rate_limits() -> RateLimits:
    return current_app.extensions["rate_limits"]
