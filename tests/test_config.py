"""Settings from the environment: accepted URL forms, development defaults, and production
refusing to start on a missing or malformed value, naming the variable."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from common.settings import DEV_SECRET_KEY, ConfigError, Settings
from models.db import db
from tests.defaults import not_defaults

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": "fcb128b0e5a5ef2aa40903ad14fa3d498879bebe45e9e787",
    "DATABASE_URL": "postgres://orders:pw@db.internal:5432/orders",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "OIDC_ISSUER": "https://auth.example.com/realms/donfiles",
    "OIDC_CLIENT_ID": "customer_api",
    "OIDC_CLIENT_SECRET": "oidc-9c1e4b7a2f6d8e03b5c7",
    "AT_USERNAME": "donfiles",
    "AT_API_KEY": "atsk_5f2b9c0e7d4a1836f0b2c9e5",
    "AT_CALLBACK_SECRET": "HrkagbDgNfynQSdyTjiJVYryxrT2F5Ec",
    "FLOWER_BASIC_AUTH": "ops:s3cure-Flower-pw",
}
REQUIRED = [name for name in PRODUCTION if name not in ("APP_ENV", "OIDC_CLIENT_ID", "AT_USERNAME")]


def without(*names: str, **changes: str) -> dict[str, str]:
    """The complete production environment with `names` removed and `changes` applied."""
    return {**{k: v for k, v in PRODUCTION.items() if k not in names}, **changes}


# --- development ----------------------------------------------------------------------------


def test_an_empty_environment_gives_working_development_defaults():
    settings = Settings.from_env({})

    assert settings.is_production is False
    assert settings.env == "development"
    assert settings.secret_key == DEV_SECRET_KEY
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.redis_url.startswith("redis://")
    assert settings.default_region == "KE"
    assert settings.default_currency == "KES"
    assert settings.graphql_max_depth == 10
    assert settings.graphql_max_tokens == 800
    assert settings.max_body_bytes == 64 * 1024


@pytest.mark.parametrize("value", ["development", "Development", " dev ", "DEV\n", "", "  "])
def test_development_and_unset_are_development(value):
    assert Settings.from_env({"APP_ENV": value}).env == "development"


@pytest.mark.parametrize(
    "value", ["production", "Production", " production", "PRODUCTION\n", "prod", " Prod "]
)
def test_production_is_read_trimmed_and_in_any_case(value):
    assert Settings.from_env(without(APP_ENV=value)).is_production is True
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env({"APP_ENV": value})


@pytest.mark.parametrize(
    "value", ["staging", "test", "prodution", "production2", "1", "true", "live", "pro duction"]
)
@pytest.mark.parametrize("variable", ["APP_ENV", "FLASK_ENV"])
def test_an_unknown_mode_is_refused_in_every_mode(variable, value):
    message = f"{variable}={value!r} is not a known mode: set it to production or development"
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        Settings.from_env({variable: value})
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(without(**{variable: value}))


def test_production_wins_when_app_env_and_flask_env_disagree():
    environment = without(APP_ENV="development", FLASK_ENV="production")

    assert Settings.from_env(environment).is_production is True


def test_a_config_error_that_ends_a_process_is_printed_without_a_traceback(capsys):
    error = ConfigError("APP_ENV='staging' is not a known mode")

    sys.excepthook(ConfigError, error, error.__traceback__)

    assert capsys.readouterr().err == "configuration error: APP_ENV='staging' is not a known mode\n"


def test_other_errors_keep_their_traceback(capsys):
    try:
        raise ValueError("boom")
    except ValueError as error:
        sys.excepthook(ValueError, error, error.__traceback__)

    printed = capsys.readouterr().err
    assert "Traceback" in printed
    assert "ValueError: boom" in printed


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db:5432/orders", "postgresql+psycopg://u:p@db:5432/orders"),
        ("postgresql://u:p@db:5432/orders", "postgresql+psycopg://u:p@db:5432/orders"),
        ("postgresql+psycopg2://u@db/orders", "postgresql+psycopg://u@db/orders"),
        ("postgresql+psycopg://u@db/orders", "postgresql+psycopg://u@db/orders"),
    ],
)
def test_postgres_urls_are_turned_into_psycopg_urls(given, used):
    assert Settings.from_env({"DATABASE_URL": given}).database_url == used


def test_the_audience_defaults_to_the_client_id():
    assert Settings.from_env({"OIDC_CLIENT_ID": "shop_app"}).audience == "shop_app"
    explicit = Settings.from_env({"OIDC_CLIENT_ID": "shop_app", "OIDC_AUDIENCE": "orders"})
    assert explicit.audience == "orders"


def test_authorized_parties_are_the_client_and_the_listed_ones():
    assert Settings.from_env({"OIDC_CLIENT_ID": "shop_api"}).authorized_parties == {"shop_api"}
    listed = Settings.from_env({"OIDC_AUTHORIZED_PARTIES": " shop_spa, mobile "})
    assert listed.oidc_authorized_parties == ("shop_spa", "mobile")
    assert listed.authorized_parties == {"customer_api", "shop_spa", "mobile"}


@pytest.mark.parametrize("value", ["shop_spa,", ",shop_spa", "a,,b", " , "])
def test_an_empty_authorized_party_is_malformed(value):
    with pytest.raises(ConfigError, match=r"^OIDC_AUTHORIZED_PARTIES is malformed"):
        Settings.from_env({"OIDC_AUTHORIZED_PARTIES": value})


def test_typed_values_are_parsed():
    settings = Settings.from_env(
        {
            "GRAPHQL_MAX_DEPTH": "7",
            "GRAPHQL_MAX_TOKENS": "500",
            "LOG_LEVEL": "debug",
            "AT_API_URL": "http://127.0.0.1:9000/",
        }
    )

    assert settings.graphql_max_depth == 7
    assert settings.graphql_max_tokens == 500
    assert settings.log_level == "DEBUG"
    assert settings.at_api_url == "http://127.0.0.1:9000"


def test_empty_values_count_as_unset():
    assert Settings.from_env({"DATABASE_URL": "", "GRAPHQL_MAX_DEPTH": ""}) == Settings()


def test_a_dotenv_file_is_read_in_development(tmp_path, monkeypatch):
    for name in ("APP_ENV", "FLASK_ENV", "COMPANY_NAME", "GRAPHQL_MAX_DEPTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("COMPANY_NAME=Duka Bora\nGRAPHQL_MAX_DEPTH=6\n")
    monkeypatch.setenv("GRAPHQL_MAX_DEPTH", "8")

    settings = Settings.from_env()

    assert settings.company_name == "Duka Bora"
    assert settings.graphql_max_depth == 8  # the real environment wins over .env


def test_an_unknown_mode_in_a_dotenv_file_is_refused(tmp_path, monkeypatch):
    for name in ("APP_ENV", "FLASK_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("APP_ENV=prodution\n")

    with pytest.raises(ConfigError, match=r"^APP_ENV='prodution' is not a known mode"):
        Settings.from_env()


def test_a_dotenv_file_is_ignored_in_production(tmp_path, monkeypatch):
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FLASK_ENV", raising=False)
    monkeypatch.delenv("COMPANY_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("COMPANY_NAME=From Dotenv\n")

    assert Settings.from_env().company_name == "Donfiles"


# --- production -----------------------------------------------------------------------------


def test_a_complete_production_environment_is_accepted():
    settings = Settings.from_env(PRODUCTION)

    assert settings.is_production is True
    assert settings.database_url == "postgresql+psycopg://orders:pw@db.internal:5432/orders"
    assert settings.secret_key == PRODUCTION["SECRET_KEY"]


def test_flask_env_production_implies_production():
    environment = without("APP_ENV", FLASK_ENV="production")

    assert Settings.from_env(environment).is_production is True
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env({"FLASK_ENV": "production"})


@pytest.mark.parametrize("name", REQUIRED)
def test_production_refuses_to_start_without_a_required_value(name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(without(name))


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL"])
def test_production_treats_an_empty_value_as_missing(name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(without(name, **{name: ""}))


def test_production_names_every_missing_value_at_once():
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"APP_ENV": "production"})

    for name in REQUIRED:
        assert name in str(refused.value)


@pytest.mark.parametrize("secret", ["short", DEV_SECRET_KEY])
def test_production_refuses_a_weak_secret_key(secret):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env(without(SECRET_KEY=secret))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRAPHQL_MAX_DEPTH", "abc"),
        ("GRAPHQL_MAX_DEPTH", "0"),
        ("GRAPHQL_MAX_DEPTH", "-3"),
        ("GRAPHQL_MAX_TOKENS", "2.5"),
        ("GRAPHQL_MAX_COST", "lots"),
        ("DATABASE_URL", "mysql://u@db/orders"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://cache:6379"),
        ("OIDC_ISSUER", "auth.example.com/realms/donfiles"),
        ("OIDC_JWKS_URL", "ftp://auth.example.com/certs"),
        ("AT_API_URL", "127.0.0.1:9000"),
        ("SMS_TIMEOUT", "45"),
        ("SMS_TIMEOUT", "0"),
        ("SMS_MAX_ATTEMPTS", "none"),
        ("WORKER_CONCURRENCY", "0"),
        ("WEB_THREADS", "four"),
    ],
)
def test_production_refuses_a_malformed_value_naming_it(name, value):
    with pytest.raises(ConfigError, match=f"^{name} is malformed"):
        Settings.from_env(without(name, **{name: value}))


def test_a_malformed_value_is_refused_in_development_too():
    with pytest.raises(ConfigError, match="GRAPHQL_MAX_DEPTH"):
        Settings.from_env({"GRAPHQL_MAX_DEPTH": "ten"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", "change-me-to-32-or-more-random-characters"),
        ("OIDC_CLIENT_SECRET", "change-me"),
        ("AT_API_KEY", "set-me"),
        ("AT_CALLBACK_SECRET", "REPLACE_ME"),
        ("FLOWER_BASIC_AUTH", "admin:change-me"),
    ],
)
def test_production_refuses_placeholder_secrets(name, value):
    with pytest.raises(ConfigError, match=f"{name} .*is a template placeholder"):
        Settings.from_env(without(**{name: value}))


def test_the_database_pool_has_a_connection_for_every_thread_of_a_process(make_app):
    """Every pool thread of a worker may claim or record at the same moment: none of them
    waits for a connection (the pool's wait is seconds, and then the claim fails)."""
    app = make_app(role="worker", worker_concurrency=24, web_threads=2)

    with app.app_context():
        connections = [db.engine.connect() for _ in range(24)]  # each thread holding one
        for connection in connections:
            connection.close()

    assert (
        make_app(worker_concurrency=2, web_threads=6).config["SQLALCHEMY_ENGINE_OPTIONS"][
            "pool_size"
        ]
        == 6
    )


def test_the_pool_is_sized_by_the_concurrency_the_processes_run_with():
    settings = Settings.from_env({"WORKER_CONCURRENCY": "48", "WEB_THREADS": "8"})

    assert (settings.worker_concurrency, settings.web_threads) == (48, 8)
    assert (settings.db_pool_size("worker"), settings.db_pool_size("web")) == (48, 8)
    # The defaults are what the Procfile and gunicorn.conf.py run when the variables are unset.
    procfile = (ROOT / "Procfile").read_text()
    assert f"--concurrency=${{WORKER_CONCURRENCY:-{Settings().worker_concurrency}}}" in procfile
    gunicorn = (ROOT / "gunicorn.conf.py").read_text()
    assert f'os.environ.get("WEB_THREADS", "{Settings().web_threads}")' in gunicorn


# --- the example file -------------------------------------------------------------------------


def test_every_value_in_env_example_is_what_the_service_does_without_it():
    # Copied to .env, a stale example value silently changes the service (GRAPHQL_MAX_TOKENS
    # once said 2000 while the service shipped with 800).
    example = dotenv_values(ROOT / ".env.example")

    # But the mode: the example is for development, which the Procfile and the image are not
    # (they run production when APP_ENV is unset), and production never reads .env.
    assert not_defaults(example) == {"APP_ENV": "development"}
