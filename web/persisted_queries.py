"""Automatic persisted queries, in Apollo's protocol: a client sends a document's SHA-256 in
`extensions.persistedQuery` instead of the document; when the service does not know it, the
client sends both once and later requests (GETs a cache can keep, too) carry only the hash.

Documents are kept in Redis, under their hash, for PERSISTED_QUERY_TTL seconds. A document is
kept only once it has passed the checks that do not depend on variables, only when a signed-in
caller sent it, and only when it is no longer than a prepared document may be cached: strangers
must not be able to fill the Redis that Celery's queue lives in. A persisted document goes
through the same checks as any other, each time. While Redis is down every hash is unknown,
so clients send their documents in full and are served.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import redis
from flask import Flask, current_app
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from common.settings import Settings

log = logging.getLogger(__name__)

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
KEY_PREFIX = "persisted-query:"
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# A look-up must never hold a request long on a dead Redis: one short try, then "not found".
REDIS_TIMEOUT = 0.25
# The longest document kept: a client's documents are a few kilobytes; anything longer is
# served each time it is sent, never stored.
MAX_STORED_CHARS = 16 * 1024


class PersistedQueryError(ValueError):
    """An `extensions.persistedQuery` the service cannot use: the message and code say why.
    `malformed` ones are no GraphQL-over-HTTP request at all (HTTP 400 in either media type);
    an unknown hash is a request error like a document that does not validate."""

    def __init__(self, message: str, code: str, *, malformed: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.malformed = malformed


class PersistedQueries:
    """The store of one app."""

    def __init__(self, settings: Settings) -> None:
        self.ttl = settings.persisted_query_ttl
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )

    def resolve(self, data: dict[str, Any]) -> str | None:
        """The request's document: `query` once its hash is checked, or the stored document of
        a hash sent alone. Returns the hash to store the document under, when it came with
        one; raises PersistedQueryError for an unknown or wrong hash."""
        extension = data.get("extensions", {}).get("persistedQuery")
        if extension is None:
            return None
        digest = _digest_of(extension)
        query = data.get("query")
        if query is None:
            stored = self._get(digest)
            if stored is None:
                raise PersistedQueryError("PersistedQueryNotFound", NOT_FOUND, malformed=False)
            data["query"] = stored
            return None  # already stored: nothing to keep
        if hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest() != digest:
            raise PersistedQueryError("provided sha does not match query", "BAD_REQUEST")
        return digest

    def remember(self, digest: str, query: str) -> None:
        """Keep `query` under `digest` for the TTL; a Redis that is down only logs."""
        if len(query) > MAX_STORED_CHARS:
            return
        try:
            self.redis.set(KEY_PREFIX + digest, query.encode("utf-8", "surrogatepass"), ex=self.ttl)
        except RedisError as error:
            log.warning("could not keep a persisted query: %s", error)

    def _get(self, digest: str) -> str | None:
        try:
            stored = self.redis.get(KEY_PREFIX + digest)
        except RedisError as error:
            log.warning("persisted queries unavailable: %s", error)
            return None
        if not isinstance(stored, bytes):
            return None
        return stored.decode("utf-8", "surrogatepass")

    def close(self) -> None:
        self.redis.close()


def _digest_of(extension: Any) -> str:
    if not isinstance(extension, dict):
        raise PersistedQueryError("extensions.persistedQuery must be an object.", "BAD_REQUEST")
    version = extension.get("version")
    if type(version) is not int or version != 1:
        raise PersistedQueryError("Unsupported persisted query version", "BAD_REQUEST")
    digest = extension.get("sha256Hash")
    if not isinstance(digest, str) or not SHA256.fullmatch(digest):
        raise PersistedQueryError(
            "extensions.persistedQuery.sha256Hash must be a SHA-256 in hex.", "BAD_REQUEST"
        )
    return digest.lower()


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["persisted_queries"] = PersistedQueries(settings)


def persisted_queries() -> PersistedQueries:
    return current_app.extensions["persisted_queries"]
