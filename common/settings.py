"""Settings read from the environment, in one place.

Every other module takes its settings from the `Settings` object built here (through
`app.config["SETTINGS"]` or `current_settings()`); nothing else reads `os.environ`.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from dotenv import dotenv_values

from celeryconfig import TASK_TIME_LIMIT, VISIBILITY_TIMEOUT
from common import setting_values as parse
from common.config_errors import ConfigError
from common.secret_checks import MIN_SECRET_LENGTH, production_weaknesses, secret_weakness
from common.setting_values import REDIS_CERT_REQS

PRODUCTION = "production"
DEVELOPMENT = "development"
# What APP_ENV and FLASK_ENV may say, read trimmed and in any case. Anything else stops the
# process: a typo must never quietly run production in development mode.
MODES = {
    "production": PRODUCTION,
    "prod": PRODUCTION,
    "development": DEVELOPMENT,
    "dev": DEVELOPMENT,
}
MODE_VARIABLES = ("APP_ENV", "FLASK_ENV")
DEV_SECRET_KEY = "dev-insecure-secret-key"  # noqa: S105 - refused in production below


# Beyond SMS_TIMEOUT, what a send's lease must leave room for: the gateway's connect timeout
# (3 s) and recording the reply.
SEND_OVERHEAD_SECONDS = 10.0

PRODUCTION_REQUIRED = (
    "secret_key",
    "database_url",
    "redis_url",
    "oidc_issuer",
    "oidc_client_secret",
    "at_api_key",
    "at_callback_secret",
    "flower_basic_auth",
)
# Flower's process talks to Redis alone (python -m worker.flower): it needs no other secret.
FLOWER_REQUIRED = ("redis_url", "flower_basic_auth")
# Secrets the provider issues, and those the operator makes up, each with the length it
# needs (a new one goes in OPERATOR_SECRETS; unset passes there, so it may be optional).
# common/secret_checks.py says what each must be.
PROVIDER_SECRETS = ("oidc_client_secret", "at_api_key")
OPERATOR_SECRETS = (
    ("SECRET_KEY", "secret_key", MIN_SECRET_LENGTH),
    ("AT_CALLBACK_SECRET", "at_callback_secret", MIN_SECRET_LENGTH),
    ("METRICS_TOKEN", "metrics_token", MIN_SECRET_LENGTH),
)
GENERATE_HINT = "generate each secret with `openssl rand -hex 32`"


_warned = False


def warn_once(settings: Settings) -> None:
    """Log, once per process and at its start, what production allows but its operator
    should hear of: a Redis whose certificate goes unchecked."""
    global _warned
    if _warned:
        return
    _warned = True
    if settings.is_production and settings.redis_ssl.get("ssl_cert_reqs") == ssl.CERT_NONE:
        logging.getLogger(__name__).warning(
            "REDIS_SSL_CERT_REQS=none: the Redis server's certificate is not checked, so "
            "whoever can intercept the connection can pose as Redis (TLS still encrypts it); "
            "Heroku Redis needs it for its self-signed certificate"
        )


def check_secret(name: str, value: str | None, min_length: int = MIN_SECRET_LENGTH) -> None:
    """Raise `ConfigError` naming `name` when `value`, a secret the operator makes up, is
    unset, a placeholder, shorter than `min_length` or easy to guess; the message never shows
    the value."""
    weakness = secret_weakness(value, min_length) if value else "is not set"
    if weakness:
        raise ConfigError(f"{name} {weakness}: {GENERATE_HINT}")


def mode_of(environ: Mapping[str, str]) -> str | None:
    """The mode APP_ENV and FLASK_ENV select (production if either says so), None when both
    are unset or empty; an unknown value raises `ConfigError` naming its variable."""
    modes = set()
    for name in MODE_VARIABLES:
        raw = environ.get(name) or ""
        if not raw.strip():
            continue
        mode = MODES.get(raw.strip().lower())
        if mode is None:
            raise ConfigError(
                f"{name}={raw!r} is not a known mode: set it to production or development"
                " (unset: development, but the Procfile's processes and the image run production)"
            )
        modes.add(mode)
    if not modes:
        return None
    return PRODUCTION if PRODUCTION in modes else DEVELOPMENT


@dataclass(frozen=True)
class Settings:
    """Typed service settings; build with `Settings.from_env()`."""

    env: str = DEVELOPMENT
    secret_key: str = DEV_SECRET_KEY
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/orders"
    redis_url: str = "redis://127.0.0.1:6379/0"
    oidc_issuer: str | None = None
    oidc_client_id: str = "customer_api"
    oidc_client_secret: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_authorized_parties: tuple[str, ...] = ()
    admin_role: str = "admin"
    at_username: str = "sandbox"
    at_api_key: str | None = None
    at_sender_id: str | None = None
    at_api_url: str | None = None
    at_callback_secret: str | None = None
    company_name: str = "Donfiles"
    flower_basic_auth: str | None = None
    metrics_token: str | None = None
    default_region: str = "KE"
    default_currency: str = "KES"
    graphql_max_depth: int = 10
    graphql_max_tokens: int = 800
    graphql_max_cost: int = 5000
    graphql_max_fields: int = 250
    max_body_bytes: int = 64 * 1024
    log_level: str = "INFO"
    sms_max_attempts: int = 6
    sms_backoff_base: int = 15
    sms_backoff_cap: int = 600
    sms_timeout: float = 10.0
    # How long a claimed notification is a worker's: past it the sweep sends it again.
    sms_lease_seconds: int = 60
    # How overdue a QUEUED notification is before the sweep publishes it again (its task was
    # lost, or never published while Redis was down).
    sms_sweep_grace_seconds: int = 45
    celery_queue: str = "orders"
    metrics_dir: str | None = None
    sentry_dsn: str | None = None
    worker_metrics_port: int | None = None
    # Phones outside these regions get no SMS (empty: `default_region` alone).
    sms_allowed_regions: tuple[str, ...] = ()
    sms_rate_limit: str = "30 per minute"  # per caller, of the mutations that send an SMS
    # Sign-in attempts since the username's last success: from one client address (tight, so
    # a stranger cannot lock a user out where she signs in), and from every address (looser
    # than one address can reach, below Keycloak's lockout at 30 failures). Per address,
    # every attempt across usernames.
    login_rate_limit: str = "5 per minute; 10 per hour"
    login_username_rate_limit: str = "25 per hour"
    login_address_rate_limit: str = "30 per minute; 300 per hour"
    # refreshToken and logout per client address: a budget of their own, as they are routine
    # (one refresh per access token's lifetime per signed-in user) where sign-ins are rare.
    session_address_rate_limit: str = "60 per minute"
    # Documents one caller may add to the persisted queries (each new document is kept once for
    # everyone): a client stores each of its few documents once a TTL; more fills Redis.
    persisted_query_rate_limit: str = "100 per hour"
    rate_limit_prefix: str = "rate-limits"
    # Proxies in front whose X-Forwarded-For/-Proto are believed (Heroku's router: 1).
    trusted_proxies: int = 0
    redis_ssl_cert_reqs: str = "required"
    # Threads that may each hold a database connection: gunicorn's per web process (read by
    # gunicorn.conf.py too, same default) and the worker's pool (the Procfile's --concurrency).
    # Each pool defaults to its process's threads, so no thread waits for a connection.
    web_threads: int = 4
    worker_concurrency: int = 32
    web_db_pool_size: int | None = None
    worker_db_pool_size: int | None = None
    # The platform's port for the process (Heroku's PORT); Flower listens there when told no
    # port of its own.
    port: int | None = None
    # Browser origins allowed to call the API (None: localhost in development, none in
    # production).
    cors_origins: tuple[str, ...] | None = None
    schema_sdl_public: bool = True  # GET /graphql/schema.graphql
    persisted_query_ttl: int = 24 * 3600  # seconds a persisted query is kept in Redis

    @property
    def is_production(self) -> bool:
        return self.env == PRODUCTION

    @property
    def allowed_regions(self) -> tuple[str, ...]:
        """The regions whose phones may get an SMS."""
        return self.sms_allowed_regions or (self.default_region,)

    @property
    def redis_ssl(self) -> dict[str, ssl.VerifyMode]:
        """What every Redis client of REDIS_URL is given for TLS: the certificate check
        REDIS_SSL_CERT_REQS asks for, on a rediss:// URL; nothing on a plain one."""
        if not self.redis_url.startswith("rediss://"):
            return {}
        return {"ssl_cert_reqs": REDIS_CERT_REQS[self.redis_ssl_cert_reqs]}

    def db_pool_size(self, role: str) -> int:
        """The database connections a process of `role` ("worker", else web) keeps."""
        if role == "worker":
            return self.worker_db_pool_size or self.worker_concurrency
        return self.web_db_pool_size or self.web_threads

    @property
    def audience(self) -> str:
        return self.oidc_audience or self.oidc_client_id

    @property
    def authorized_parties(self) -> frozenset[str]:
        """The clients whose tokens this API accepts (a token's `azp`): its own, and those
        OIDC_AUTHORIZED_PARTIES names."""
        return frozenset({self.oidc_client_id, *self.oidc_authorized_parties})

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        required: Iterable[str] = PRODUCTION_REQUIRED,
    ) -> Settings:
        """Read settings from `environ` (default: the process environment plus `.env` outside
        production). A malformed value, and in production a missing `required` one, raises
        `ConfigError`."""
        source = dict(os.environ if environ is None else environ)
        mode = mode_of(source)
        if environ is None and mode != PRODUCTION and os.path.exists(".env"):
            source = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **source}
            mode = mode_of(source)
        production = mode == PRODUCTION

        values: dict[str, Any] = {"env": mode or DEVELOPMENT}
        for name, attribute, read in _VARIABLES:
            raw = source.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[attribute] = read(raw)
            except ValueError as error:
                raise ConfigError(f"{name} is malformed: {error}") from None

        settings = cls(**values)
        if settings.sms_lease_seconds < settings.sms_timeout + SEND_OVERHEAD_SECONDS:
            raise ConfigError(
                f"SMS_LEASE_SECONDS must be at least SMS_TIMEOUT + {SEND_OVERHEAD_SECONDS:g} "
                "(the connect timeout and the recording of the reply): a lease that ends "
                "mid-send makes the message go out twice"
            )
        if settings.sms_backoff_cap + TASK_TIME_LIMIT >= VISIBILITY_TIMEOUT:
            raise ConfigError(
                f"SMS_BACKOFF_CAP must be below {VISIBILITY_TIMEOUT - TASK_TIME_LIMIT} seconds: "
                "Redis hands a task waiting longer to a second worker, so its SMS would go twice"
            )
        for pool, threads in (
            ("WEB_DB_POOL_SIZE", "WEB_THREADS"),
            ("WORKER_DB_POOL_SIZE", "WORKER_CONCURRENCY"),
        ):
            size, count = (getattr(settings, name.lower()) for name in (pool, threads))
            if size is not None and size < count:
                raise ConfigError(
                    f"{pool}={size} is below {threads}={count}: a thread would wait for a "
                    f"database connection; leave {pool} unset (it follows {threads})"
                )
        if production:
            settings.check_production(required)
        return settings

    def check_production(self, required: Iterable[str] = PRODUCTION_REQUIRED) -> None:
        """Refuse to start in production without the settings that keep it safe."""
        env_names = {attribute: name for name, attribute, _ in _VARIABLES}
        defaults = {f.name: f.default for f in fields(self)}
        # A development default is as bad as nothing: production must say what it uses.
        missing = [
            env_names[attribute]
            for attribute in required
            if getattr(self, attribute) in (None, "", defaults[attribute])
        ]
        if missing:
            raise ConfigError(f"missing required setting(s) in production: {', '.join(missing)}")
        plain = [
            env_names[attribute]
            # The gateway's URL where the process sends SMS (it needs the API key then).
            for attribute, needed_by in (("oidc_issuer",) * 2, ("at_api_url", "at_api_key"))
            if needed_by in required and not parse.private_or_https(getattr(self, attribute))
        ]
        if plain:
            raise ConfigError(
                f"{', '.join(plain)} must be https:// in production (keys, tokens and API keys "
                "would travel in the clear); plain http:// only to this host"
            )
        weaknesses = production_weaknesses(
            # A development default left in place is unset here (the required ones were
            # refused above): a process such as Flower's needs none of the others.
            operator={
                name: (None if value == defaults[attribute] else value, min_length)
                for name, attribute, min_length in OPERATOR_SECRETS
                for value in (getattr(self, attribute),)
            },
            provider={
                env_names[attribute]: getattr(self, attribute) for attribute in PROVIDER_SECRETS
            },
            flower_basic_auth=self.flower_basic_auth or "",
        )
        if weaknesses:
            raise ConfigError(
                f"weak secret(s) in production: {'; '.join(weaknesses)}; {GENERATE_HINT}"
            )


_VARIABLES: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("SECRET_KEY", "secret_key", str),
    ("DATABASE_URL", "database_url", parse.database_url),
    ("REDIS_URL", "redis_url", parse.redis_url),
    ("OIDC_ISSUER", "oidc_issuer", parse.http_url),
    ("OIDC_CLIENT_ID", "oidc_client_id", str),
    ("OIDC_CLIENT_SECRET", "oidc_client_secret", str),
    ("OIDC_AUDIENCE", "oidc_audience", str),
    ("OIDC_JWKS_URL", "oidc_jwks_url", parse.http_url),
    ("OIDC_AUTHORIZED_PARTIES", "oidc_authorized_parties", parse.names),
    ("OIDC_ADMIN_ROLE", "admin_role", str),
    ("AT_USERNAME", "at_username", str),
    ("AT_API_KEY", "at_api_key", str),
    ("AT_SENDER_ID", "at_sender_id", str),
    ("AT_API_URL", "at_api_url", parse.http_url),
    ("AT_CALLBACK_SECRET", "at_callback_secret", str),
    ("COMPANY_NAME", "company_name", str),
    ("FLOWER_BASIC_AUTH", "flower_basic_auth", str),
    ("METRICS_TOKEN", "metrics_token", str),
    ("DEFAULT_PHONE_REGION", "default_region", parse.region),
    ("DEFAULT_CURRENCY", "default_currency", str),
    ("GRAPHQL_MAX_DEPTH", "graphql_max_depth", parse.positive_int),
    ("GRAPHQL_MAX_TOKENS", "graphql_max_tokens", parse.positive_int),
    ("GRAPHQL_MAX_COST", "graphql_max_cost", parse.positive_int),
    ("GRAPHQL_MAX_FIELDS", "graphql_max_fields", parse.positive_int),
    ("LOG_LEVEL", "log_level", str.upper),
    ("SMS_MAX_ATTEMPTS", "sms_max_attempts", parse.positive_int),
    ("SMS_BACKOFF_BASE", "sms_backoff_base", parse.positive_int),
    ("SMS_BACKOFF_CAP", "sms_backoff_cap", parse.positive_int),
    ("SMS_TIMEOUT", "sms_timeout", parse.sms_timeout),
    ("SMS_LEASE_SECONDS", "sms_lease_seconds", parse.positive_int),
    ("SMS_SWEEP_GRACE_SECONDS", "sms_sweep_grace_seconds", parse.positive_int),
    ("CELERY_QUEUE", "celery_queue", str),
    ("PROMETHEUS_MULTIPROC_DIR", "metrics_dir", str),
    ("SENTRY_DSN", "sentry_dsn", parse.http_url),
    ("WORKER_METRICS_PORT", "worker_metrics_port", parse.positive_int),
    ("SMS_ALLOWED_REGIONS", "sms_allowed_regions", parse.regions),
    ("SMS_RATE_LIMIT", "sms_rate_limit", parse.rate_limit),
    ("LOGIN_RATE_LIMIT", "login_rate_limit", parse.rate_limit),
    ("LOGIN_USERNAME_RATE_LIMIT", "login_username_rate_limit", parse.rate_limit),
    ("LOGIN_ADDRESS_RATE_LIMIT", "login_address_rate_limit", parse.rate_limit),
    ("SESSION_ADDRESS_RATE_LIMIT", "session_address_rate_limit", parse.rate_limit),
    ("PERSISTED_QUERY_RATE_LIMIT", "persisted_query_rate_limit", parse.rate_limit),
    ("RATE_LIMIT_PREFIX", "rate_limit_prefix", str),
    ("TRUSTED_PROXIES", "trusted_proxies", parse.count),
    ("REDIS_SSL_CERT_REQS", "redis_ssl_cert_reqs", parse.cert_reqs),
    ("WEB_THREADS", "web_threads", parse.positive_int),
    ("WORKER_CONCURRENCY", "worker_concurrency", parse.positive_int),
    ("WEB_DB_POOL_SIZE", "web_db_pool_size", parse.positive_int),
    ("WORKER_DB_POOL_SIZE", "worker_db_pool_size", parse.positive_int),
    ("PORT", "port", parse.port),
    ("CORS_ORIGINS", "cors_origins", parse.origins),
    ("SCHEMA_SDL_PUBLIC", "schema_sdl_public", parse.flag),
    ("PERSISTED_QUERY_TTL", "persisted_query_ttl", parse.positive_int),
)
