"""Settings read from the environment, in one place.

Every other module takes its settings from the `Settings` object built here (through
`app.config["SETTINGS"]` or `current_settings()`); nothing else reads `os.environ`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import phonenumbers
from dotenv import dotenv_values
from limits import parse_many

from web.secret_checks import MIN_SECRET_LENGTH, production_weaknesses, secret_weakness

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


# The longest wait for the gateway a send may have (SMS_TIMEOUT).
MAX_SMS_TIMEOUT = 30.0
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
# Secrets the provider issues, and those the operator makes up, each with the length it
# needs (a new one goes in OPERATOR_SECRETS; unset passes there, so it may be optional).
# web/secret_checks.py says what each must be.
PROVIDER_SECRETS = ("oidc_client_secret", "at_api_key")
OPERATOR_SECRETS = (
    ("SECRET_KEY", "secret_key", MIN_SECRET_LENGTH),
    ("AT_CALLBACK_SECRET", "at_callback_secret", MIN_SECRET_LENGTH),
    ("METRICS_TOKEN", "metrics_token", MIN_SECRET_LENGTH),
)
GENERATE_HINT = "generate each secret with `openssl rand -hex 32`"


class ConfigError(RuntimeError):
    """A missing or malformed setting; the message names the variable."""


def _report_config_error(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    # A process that stops on a setting (flask, celery) prints the message alone: it names the
    # variable, and a page of traceback above it would only hide it. gunicorn prints its own
    # one-line "Error:" for a RuntimeError such as this.
    if isinstance(error, ConfigError):
        print(f"configuration error: {error}", file=sys.stderr)
    else:
        _previous_excepthook(kind, error, trace)


_previous_excepthook = sys.excepthook
sys.excepthook = _report_config_error


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
                " (unset means development)"
            )
        modes.add(mode)
    if not modes:
        return None
    return PRODUCTION if PRODUCTION in modes else DEVELOPMENT


def _database_url(value: str) -> str:
    # Heroku hands out postgres:// URLs, which SQLAlchemy 2 rejects; psycopg 3 is our driver.
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix) :]
    if value.startswith("postgresql+psycopg://"):
        return value
    raise ValueError("expected a postgres:// or postgresql:// URL")


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


def _sms_timeout(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds <= MAX_SMS_TIMEOUT:
        raise ValueError(f"expected seconds above 0 and at most {MAX_SMS_TIMEOUT:g}")
    return seconds


def _names(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(","))
    if not all(names):
        raise ValueError("expected comma-separated names, none of them empty")
    return names


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive whole number")
    return number


def _region(value: str) -> str:
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not a region code such as KE, UG or TZ")
    return code


def _regions(value: str) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(_region(code) for code in value.split(",") if code.strip()))
    if not codes:
        raise ValueError("expected region codes separated by commas, e.g. KE,UG")
    return codes


def _rate_limit(value: str) -> str:
    """A Flask-Limiter limit string such as "30 per minute" or "5/minute; 10/hour"."""
    if not all(item.amount > 0 for item in parse_many(value)):
        raise ValueError("every limit needs an amount above 0")
    return value


def _origins(value: str) -> tuple[str, ...]:
    """Browser origins such as https://shop.example.com or http://localhost:3000."""
    origins = tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())
    for origin in origins:
        scheme, _, host = origin.partition("://")
        if scheme not in ("http", "https") or not host or "/" in host or "*" in host:
            raise ValueError(f"{origin!r} is not an origin such as https://shop.example.com")
    return origins


def _flag(value: str) -> bool:
    spelled = value.strip().lower()
    if spelled not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValueError("expected true or false")
    return spelled in ("true", "1", "yes", "on")


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("expected a whole number, 0 or more")
    return number


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
    rate_limit_prefix: str = "rate-limits"
    # Proxies in front whose X-Forwarded-For/-Proto are believed (Heroku's router: 1).
    trusted_proxies: int = 0
    # Threads of a worker process and of a gunicorn worker (the Procfile's and
    # gunicorn.conf.py's defaults): each may hold a database connection, so they size the pool.
    worker_concurrency: int = 32
    web_threads: int = 4
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
    def database_pool_size(self) -> int:
        """Connections one process keeps: one for each of its threads that may hold one at
        once, so none waits for another's (a task's send threads hold none)."""
        return max(self.worker_concurrency, self.web_threads)

    @property
    def audience(self) -> str:
        return self.oidc_audience or self.oidc_client_id

    @property
    def authorized_parties(self) -> frozenset[str]:
        """The clients whose tokens this API accepts (a token's `azp`): its own, and those
        OIDC_AUTHORIZED_PARTIES names."""
        return frozenset({self.oidc_client_id, *self.oidc_authorized_parties})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `environ` (default: the process environment plus `.env` outside
        production). In production a missing or malformed value raises `ConfigError`."""
        source = dict(os.environ if environ is None else environ)
        mode = mode_of(source)
        if environ is None and mode != PRODUCTION and os.path.exists(".env"):
            source = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **source}
            mode = mode_of(source)
        production = mode == PRODUCTION

        values: dict[str, Any] = {"env": mode or DEVELOPMENT}
        for name, attribute, parse in _VARIABLES:
            raw = source.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[attribute] = parse(raw)
            except ValueError as error:
                raise ConfigError(f"{name} is malformed: {error}") from None

        settings = cls(**values)
        if settings.sms_lease_seconds < settings.sms_timeout + SEND_OVERHEAD_SECONDS:
            raise ConfigError(
                f"SMS_LEASE_SECONDS must be at least SMS_TIMEOUT + {SEND_OVERHEAD_SECONDS:g} "
                "(the connect timeout and the recording of the reply): a lease that ends "
                "mid-send makes the message go out twice"
            )
        if production:
            settings.check_production()
        return settings

    def check_production(self) -> None:
        """Refuse to start in production without the settings that keep it safe."""
        env_names = {attribute: name for name, attribute, _ in _VARIABLES}
        defaults = {f.name: f.default for f in fields(self)}
        # A development default is as bad as nothing: production must say what it uses.
        missing = [
            env_names[attribute]
            for attribute in PRODUCTION_REQUIRED
            if getattr(self, attribute) in (None, "", defaults[attribute])
        ]
        if missing:
            raise ConfigError(f"missing required setting(s) in production: {', '.join(missing)}")
        weaknesses = production_weaknesses(
            operator={
                name: (getattr(self, attribute), min_length)
                for name, attribute, min_length in OPERATOR_SECRETS
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
    ("DATABASE_URL", "database_url", _database_url),
    ("REDIS_URL", "redis_url", _redis_url),
    ("OIDC_ISSUER", "oidc_issuer", _http_url),
    ("OIDC_CLIENT_ID", "oidc_client_id", str),
    ("OIDC_CLIENT_SECRET", "oidc_client_secret", str),
    ("OIDC_AUDIENCE", "oidc_audience", str),
    ("OIDC_JWKS_URL", "oidc_jwks_url", _http_url),
    ("OIDC_AUTHORIZED_PARTIES", "oidc_authorized_parties", _names),
    ("OIDC_ADMIN_ROLE", "admin_role", str),
    ("AT_USERNAME", "at_username", str),
    ("AT_API_KEY", "at_api_key", str),
    ("AT_SENDER_ID", "at_sender_id", str),
    ("AT_API_URL", "at_api_url", _http_url),
    ("AT_CALLBACK_SECRET", "at_callback_secret", str),
    ("COMPANY_NAME", "company_name", str),
    ("FLOWER_BASIC_AUTH", "flower_basic_auth", str),
    ("METRICS_TOKEN", "metrics_token", str),
    ("DEFAULT_PHONE_REGION", "default_region", _region),
    ("DEFAULT_CURRENCY", "default_currency", str),
    ("GRAPHQL_MAX_DEPTH", "graphql_max_depth", _positive_int),
    ("GRAPHQL_MAX_TOKENS", "graphql_max_tokens", _positive_int),
    ("GRAPHQL_MAX_COST", "graphql_max_cost", _positive_int),
    ("GRAPHQL_MAX_FIELDS", "graphql_max_fields", _positive_int),
    ("LOG_LEVEL", "log_level", str.upper),
    ("SMS_MAX_ATTEMPTS", "sms_max_attempts", _positive_int),
    ("SMS_BACKOFF_BASE", "sms_backoff_base", _positive_int),
    ("SMS_BACKOFF_CAP", "sms_backoff_cap", _positive_int),
    ("SMS_TIMEOUT", "sms_timeout", _sms_timeout),
    ("SMS_LEASE_SECONDS", "sms_lease_seconds", _positive_int),
    ("SMS_SWEEP_GRACE_SECONDS", "sms_sweep_grace_seconds", _positive_int),
    ("CELERY_QUEUE", "celery_queue", str),
    ("PROMETHEUS_MULTIPROC_DIR", "metrics_dir", str),
    ("SENTRY_DSN", "sentry_dsn", _http_url),
    ("WORKER_METRICS_PORT", "worker_metrics_port", _positive_int),
    ("SMS_ALLOWED_REGIONS", "sms_allowed_regions", _regions),
    ("SMS_RATE_LIMIT", "sms_rate_limit", _rate_limit),
    ("LOGIN_RATE_LIMIT", "login_rate_limit", _rate_limit),
    ("LOGIN_USERNAME_RATE_LIMIT", "login_username_rate_limit", _rate_limit),
    ("LOGIN_ADDRESS_RATE_LIMIT", "login_address_rate_limit", _rate_limit),
    ("SESSION_ADDRESS_RATE_LIMIT", "session_address_rate_limit", _rate_limit),
    ("RATE_LIMIT_PREFIX", "rate_limit_prefix", str),
    ("TRUSTED_PROXIES", "trusted_proxies", _count),
    ("WORKER_CONCURRENCY", "worker_concurrency", _positive_int),
    ("WEB_THREADS", "web_threads", _positive_int),
    ("CORS_ORIGINS", "cors_origins", _origins),
    ("SCHEMA_SDL_PUBLIC", "schema_sdl_public", _flag),
    ("PERSISTED_QUERY_TTL", "persisted_query_ttl", _positive_int),
)
