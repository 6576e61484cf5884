"""The settings a platform makes an operator touch: REDIS_SSL_CERT_REQS (Heroku Redis's
self-signed certificate) reaching every Redis client, the database pools sized to the threads
that use them, and Flower's exposure when it listens where a router can reach it."""

from __future__ import annotations

import logging
import ssl
import subprocess

import pytest

import celeryconfig
import common.settings
from common.settings import FLOWER_REQUIRED, ConfigError, Settings, warn_once
from tests.heroku import ROOT, procfile
from tests.production import bare_env
from worker.flower import check_exposure, flower_celery, is_loopback

TLS_URL = "rediss://:secret@127.0.0.1:1"
PRODUCTION = {
    "APP_ENV": "production",
    "REDIS_URL": TLS_URL,
    "FLOWER_BASIC_AUTH": "ops:Tk4wQz9LmR2xVb7nPq3s",
}


@pytest.mark.parametrize(
    ("spelled", "mode"),
    [
        ("required", ssl.CERT_REQUIRED),
        ("Optional", ssl.CERT_OPTIONAL),
        (" none ", ssl.CERT_NONE),
    ],
)
def test_redis_ssl_cert_reqs_sets_the_check_of_a_tls_url(spelled, mode):
    settings = Settings.from_env({"REDIS_URL": TLS_URL, "REDIS_SSL_CERT_REQS": spelled})

    assert settings.redis_ssl == {"ssl_cert_reqs": mode}


def test_the_certificate_is_checked_unless_told_otherwise():
    assert Settings.from_env({"REDIS_URL": TLS_URL}).redis_ssl == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED
    }
    # A plain connection has no certificate; its clients take no TLS options.
    assert Settings.from_env({"REDIS_SSL_CERT_REQS": "none"}).redis_ssl == {}


@pytest.mark.parametrize("value", ["false", "0", "CERT_NONE", "insecure"])
def test_an_unknown_redis_ssl_cert_reqs_stops_the_process(value):
    with pytest.raises(ConfigError, match="REDIS_SSL_CERT_REQS is malformed"):
        Settings.from_env({"REDIS_SSL_CERT_REQS": value})


def test_every_redis_client_of_the_web_process_gets_the_setting(make_app):
    application = make_app(redis_url=TLS_URL, redis_ssl_cert_reqs="none")
    health = application.extensions["health_redis"].connection_pool.connection_kwargs
    limiter = application.extensions["rate_limits"].limiter
    relay = application.extensions["outbox_relay"].celery_app.connection_for_write()

    assert health["ssl_cert_reqs"] == ssl.CERT_NONE
    assert limiter._storage_options["ssl_cert_reqs"] == ssl.CERT_NONE
    assert relay.ssl == {"ssl_cert_reqs": ssl.CERT_NONE}


def test_a_plain_redis_url_keeps_tls_out_of_the_relay(make_app):
    # False, not None: None would let kombu put the environment's TLS options on it.
    assert make_app().extensions["outbox_relay"].celery_app.connection_for_write().ssl is False


def test_celery_broker_and_backend_get_the_setting():
    def tls(env: dict[str, str]) -> tuple[object, object]:
        config = celeryconfig.config(Settings.from_env(env))
        return config["broker_use_ssl"], config["redis_backend_use_ssl"]

    none = {"ssl_cert_reqs": ssl.CERT_NONE}
    assert tls({"REDIS_URL": TLS_URL, "REDIS_SSL_CERT_REQS": "none"}) == (none, none)
    assert tls({"REDIS_URL": "redis://127.0.0.1:1"}) == (False, False)


def test_flower_watches_the_broker_as_the_worker_reaches_it(make_app):
    settings = Settings.from_env({"REDIS_URL": TLS_URL, "REDIS_SSL_CERT_REQS": "optional"})
    flower = flower_celery(settings)
    worker = make_app(redis_url=TLS_URL, redis_ssl_cert_reqs="optional").extensions["celery"]

    assert flower.connection_for_read().as_uri() == worker.connection_for_read().as_uri()
    assert flower.connection_for_read().ssl == {"ssl_cert_reqs": ssl.CERT_OPTIONAL}
    assert flower.conf.task_default_queue == settings.celery_queue
    # No pool: Flower's inspections would keep their connections open for good.
    assert flower.conf.broker_pool_limit == 0


@pytest.fixture
def caught(monkeypatch, caplog):
    """The warnings of a fresh process (warn_once has said nothing yet)."""
    monkeypatch.setattr(common.settings, "_warned", False)
    caplog.set_level(logging.WARNING, logger="common.settings")
    return caplog


def test_production_warns_once_that_the_certificate_goes_unchecked(caught):
    settings = Settings.from_env(
        {**PRODUCTION, "REDIS_SSL_CERT_REQS": "none"}, required=FLOWER_REQUIRED
    )

    warn_once(settings)
    warn_once(settings)

    [record] = caught.records
    assert record.levelname == "WARNING"
    assert "REDIS_SSL_CERT_REQS=none" in record.getMessage()


@pytest.mark.parametrize(
    "env",
    [
        {**PRODUCTION, "REDIS_SSL_CERT_REQS": "required"},
        {"REDIS_URL": TLS_URL, "REDIS_SSL_CERT_REQS": "none"},  # development
    ],
    ids=["checked", "development"],
)
def test_no_warning_when_checked_or_in_development(caught, env):
    warn_once(Settings.from_env(env, required=FLOWER_REQUIRED))

    assert caught.records == []


# -- database pools --------------------------------------------------------------------------


def test_each_pool_follows_its_process_threads():
    settings = Settings.from_env({"WEB_THREADS": "6", "WORKER_CONCURRENCY": "12"})

    assert settings.db_pool_size("web") == 6
    assert settings.db_pool_size("worker") == 12
    larger = Settings.from_env({"WORKER_CONCURRENCY": "8", "WORKER_DB_POOL_SIZE": "10"})
    assert larger.db_pool_size("worker") == 10


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WORKER_CONCURRENCY": "16", "WORKER_DB_POOL_SIZE": "8"}, "WORKER_DB_POOL_SIZE=8"),
        ({"WEB_DB_POOL_SIZE": "2"}, "WEB_DB_POOL_SIZE=2 is below WEB_THREADS=4"),
    ],
)
def test_a_pool_smaller_than_its_threads_stops_the_process(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_the_apps_keep_as_many_connections_as_their_threads(settings):
    from dataclasses import replace

    from web import create_app

    tuned = replace(settings, web_threads=3, worker_concurrency=7)
    for role, size in (("web", 3), ("worker", 7)):
        application = create_app(tuned, role=role)
        with application.app_context():
            from models.db import db

            assert db.engine.pool.size() == size
            db.engine.dispose()
        application.extensions["health_redis"].close()
        application.extensions["rate_limits"].close()


def test_a_worker_with_more_threads_than_connections_does_not_start():
    command = procfile()["worker"] + " --concurrency=16"
    # Development, so that the pool is the only thing it could refuse (the Procfile's lines
    # run production when APP_ENV is unset).
    env = bare_env(WORKER_CONCURRENCY="8", APP_ENV="development")

    result = subprocess.run(
        ["sh", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90
    )

    assert result.returncode != 0
    assert "--concurrency=16 is above the worker's 8 database connections" in result.stderr
    assert "Traceback" not in result.stderr


# -- Flower where a router reaches it --------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_flower_on_loopback_may_run_without_credentials(address):
    assert is_loopback(address)
    check_exposure(address, None)


@pytest.mark.parametrize("address", ["", "0.0.0.0", "::", "10.1.2.3", "flower.internal"])  # noqa: S104
def test_flower_beyond_loopback_needs_credentials(address):
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH is required when Flower listens"):
        check_exposure(address, None)
    check_exposure(address, ["ops:Tk4wQz9LmR2xVb7nPq3s"])


def test_flower_needs_only_redis_and_its_credentials_in_production():
    settings = Settings.from_env(PRODUCTION, required=FLOWER_REQUIRED)

    assert settings.is_production
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env(PRODUCTION)
