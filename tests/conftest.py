"""Shared fixtures: a throwaway database on a real PostgreSQL, the development identity
provider over real HTTP, and a client that speaks GraphQL with real tokens.

`DATABASE_URL` names the server (the runner in `dev/services.py` provides one, embedded if
need be); the suite creates its own database there and drops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import make_url, text
from sqlalchemy.orm import scoped_session, sessionmaker

from common.settings import Settings
from dev.idp import DevIdentityProvider
from models.db import db
from tests.clients import GraphQLClient
from web import create_app

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
# A queue of this run's own, so tasks never mix with another run's or a developer's worker.
# Set before the Celery app reads celeryconfig, for tasks run in this process too.
QUEUE = os.environ["CELERY_QUEUE"] = f"orders-test-{uuid.uuid4().hex[:8]}"
SUITE_RATE_LIMIT = "100000 per minute"
# What the GraphQL-over-HTTP spec recommends a client accept.
RECOMMENDED_ACCEPT = (
    "application/graphql-response+json; charset=utf-8, application/json; charset=utf-8"
)


class RecommendedClient(FlaskClient):
    """Flask's test client, sending the Accept header the GraphQL-over-HTTP spec recommends
    unless a request names its own: a request error then answers 400 (tests/test_http.py
    covers clients that accept only application/json, or send no Accept)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base.setdefault("HTTP_ACCEPT", RECOMMENDED_ACCEPT)


Flask.test_client_class = RecommendedClient

# The API client's secret at the development identity provider; as long as a provider's.
CLIENT_SECRET = "customer-api-secret-of-the-test-idp"


def _admin_dsn(url: str) -> str:
    parsed = make_url(url.replace("postgres://", "postgresql://", 1)).set(
        drivername="postgresql", database="postgres"
    )
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test run, dropped afterwards."""
    name = f"orders_test_{uuid.uuid4().hex[:10]}"
    admin = _admin_dsn(SERVER_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(drivername="postgresql+psycopg", database=name)
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", autouse=True)
def _forget_test_queue() -> Iterator[None]:
    """Leave nothing of this run's queues in Redis (the lists, kombu's bindings and the rate
    limits' counters)."""
    yield
    client = redis.Redis.from_url(REDIS_URL)
    leftovers = client.keys(f"*{QUEUE}*")
    if leftovers:
        client.delete(*leftovers)
    client.close()


@pytest.fixture(scope="session")
def idp() -> Iterator[Any]:
    """The development identity provider, served on 127.0.0.1 for the whole run."""
    provider = DevIdentityProvider(
        ROOT / "dev" / "users.json", client_id="customer_api", client_secret=CLIENT_SECRET
    )
    server = provider.serve_in_thread(host="127.0.0.1", port=0)
    yield provider
    server.shutdown()


@pytest.fixture(scope="session")
def settings(database_url: str, idp: Any) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        celery_queue=QUEUE,
        oidc_issuer=idp.issuer,
        oidc_client_id="customer_api",
        oidc_client_secret=CLIENT_SECRET,
        # Rate limits count under this run's name, which the cleanup deletes; the suite's
        # few users send more than a real caller would. tests/attacks/ holds the defaults.
        rate_limit_prefix=f"{QUEUE}-limits",
        sms_rate_limit=SUITE_RATE_LIMIT,
        login_rate_limit=SUITE_RATE_LIMIT,
        login_address_rate_limit=SUITE_RATE_LIMIT,
        login_username_rate_limit=SUITE_RATE_LIMIT,
        session_address_rate_limit=SUITE_RATE_LIMIT,
        persisted_query_rate_limit=SUITE_RATE_LIMIT,
    )


def _dispose(application: Flask) -> None:
    with application.app_context():
        for engine in db.engines.values():
            engine.dispose()
    application.extensions["health_redis"].close()
    application.extensions["persisted_queries"].close()


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Any]:
    """`make_app(redis_url=...)`: another app over the same database, disposed afterwards."""
    made: list[Flask] = []

    def make(role: str = "web", **overrides: Any) -> Flask:
        made.append(create_app(replace(settings, **overrides), role=role))
        return made[-1]

    yield make
    for application in made:
        _dispose(application)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    with application.app_context():
        upgrade()
    yield application
    _dispose(application)


@pytest.fixture
def production_app(settings: Settings) -> Iterator[Flask]:
    """The same service in production mode (limits on, introspection off)."""
    application = create_app(replace(settings, env="production", secret_key="x" * 40))
    yield application
    _dispose(application)


@pytest.fixture
def session(app: Flask) -> Iterator[Any]:
    """Each test inside one transaction, rolled back at the end; the app's commits become
    savepoint releases inside it."""
    with app.app_context():
        connection = db.engine.connect()
        outer = connection.begin()
        scoped = scoped_session(
            sessionmaker(
                bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
            )
        )
        original, db.session = db.session, scoped
        try:
            yield scoped
        finally:
            db.session = original
            scoped.remove()
            outer.rollback()
            connection.close()


@pytest.fixture
def committed(app: Flask) -> Iterator[None]:
    """For tests whose threads need real commits on separate connections: empties the
    tables afterwards."""
    yield
    with app.app_context():
        db.session.execute(
            text("TRUNCATE order_events, idempotency_keys, orders, customers CASCADE")
        )
        db.session.commit()


@pytest.fixture
def graphql(app: Flask, session: Any, idp: Any):
    """`graphql("jane")` is a client signed in as jane; `graphql(None)` has no token;
    `graphql(sub=..., roles=[...])` is any other user."""

    def make(username: str | None = "jane", **claims: Any) -> GraphQLClient:
        token = idp.issue_access_token(username, **claims) if username else None
        return GraphQLClient(app.test_client(), token)

    return make


@pytest.fixture
def admin(graphql):
    return graphql("admin")


@pytest.fixture
def jane(graphql):
    return graphql("jane")
