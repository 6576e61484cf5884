"""Settings read from the environment, in one place.

Every other module takes its settings from the `Settings` object built here (through
`app.config["SETTINGS"]` or `current_settings()`); nothing else reads `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from dotenv import dotenv_values

PRODUCTION = "production"
DEVELOPMENT = "development"
DEV_SECRET_KEY = "dev-insecure-secret-key"  # noqa: S105 - refused in production below


# A send must end well inside the worker's 60-second lease on its notification.
MAX_SMS_TIMEOUT = 30.0

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
SECRETS = ("secret_key", "oidc_client_secret", "at_api_key", "at_callback_secret")
# Values shipped in templates and examples: never a real secret.
PLACEHOLDERS = ("change-me", "changeme", "replace_me", "replace-me", "set-me")


class ConfigError(RuntimeError):
    """A missing or malformed setting; the message names the variable."""


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


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive whole number")
    return number


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
    admin_role: str = "admin"
    at_username: str = "sandbox"
    at_api_key: str | None = None
    at_sender_id: str | None = None
    at_api_url: str | None = None
    at_callback_secret: str | None = None
    company_name: str = "Donfiles"
    flower_basic_auth: str | None = None
    default_region: str = "KE"
    default_currency: str = "KES"
    graphql_max_depth: int = 10
    graphql_max_tokens: int = 2000
    graphql_max_cost: int = 5000
    graphql_max_fields: int = 250
    max_body_bytes: int = 64 * 1024
    log_level: str = "INFO"
    sms_max_attempts: int = 6
    sms_backoff_base: int = 15
    sms_backoff_cap: int = 600
    sms_timeout: float = 10.0
    celery_queue: str = "orders"
    metrics_dir: str | None = None
    sentry_dsn: str | None = None
    worker_metrics_port: int | None = None
    # Proxies in front whose X-Forwarded-For/-Proto are believed (Heroku's router: 1).
    trusted_proxies: int = 0

    @property
    def is_production(self) -> bool:
        return self.env == PRODUCTION

    @property
    def audience(self) -> str:
        return self.oidc_audience or self.oidc_client_id

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `environ` (default: the process environment plus `.env` outside
        production). In production a missing or malformed value raises `ConfigError`."""
        source = dict(os.environ if environ is None else environ)
        production = PRODUCTION in {source.get("APP_ENV"), source.get("FLASK_ENV")}
        if environ is None and not production and os.path.exists(".env"):
            source = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **source}
            production = PRODUCTION in {source.get("APP_ENV"), source.get("FLASK_ENV")}

        values: dict[str, Any] = {"env": PRODUCTION if production else DEVELOPMENT}
        for name, attribute, parse in _VARIABLES:
            raw = source.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[attribute] = parse(raw)
            except ValueError as error:
                raise ConfigError(f"{name} is malformed: {error}") from None

        settings = cls(**values)
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
        flower_password = (self.flower_basic_auth or "").partition(":")[2]
        candidates = {env_names[attribute]: getattr(self, attribute) for attribute in SECRETS}
        candidates["FLOWER_BASIC_AUTH"] = flower_password
        placeholders = [
            name
            for name, value in candidates.items()
            if value and value.lower().startswith(PLACEHOLDERS)
        ]
        if placeholders:
            raise ConfigError(
                f"placeholder value(s) in production: {', '.join(placeholders)}; set real secrets"
            )
        if len(self.secret_key) < 32:
            raise ConfigError("SECRET_KEY is too short for production: use 32 characters or more")


_VARIABLES: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("SECRET_KEY", "secret_key", str),
    ("DATABASE_URL", "database_url", _database_url),
    ("REDIS_URL", "redis_url", _redis_url),
    ("OIDC_ISSUER", "oidc_issuer", _http_url),
    ("OIDC_CLIENT_ID", "oidc_client_id", str),
    ("OIDC_CLIENT_SECRET", "oidc_client_secret", str),
    ("OIDC_AUDIENCE", "oidc_audience", str),
    ("OIDC_JWKS_URL", "oidc_jwks_url", _http_url),
    ("OIDC_ADMIN_ROLE", "admin_role", str),
    ("AT_USERNAME", "at_username", str),
    ("AT_API_KEY", "at_api_key", str),
    ("AT_SENDER_ID", "at_sender_id", str),
    ("AT_API_URL", "at_api_url", _http_url),
    ("AT_CALLBACK_SECRET", "at_callback_secret", str),
    ("COMPANY_NAME", "company_name", str),
    ("FLOWER_BASIC_AUTH", "flower_basic_auth", str),
    ("DEFAULT_PHONE_REGION", "default_region", str),
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
    ("CELERY_QUEUE", "celery_queue", str),
    ("PROMETHEUS_MULTIPROC_DIR", "metrics_dir", str),
    ("SENTRY_DSN", "sentry_dsn", _http_url),
    ("WORKER_METRICS_PORT", "worker_metrics_port", _positive_int),
    ("TRUSTED_PROXIES", "trusted_proxies", _count),
)
