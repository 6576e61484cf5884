"""Shared by the attack tests: the service in production mode with the rate limits it ships
with (the suite's own settings raise them for its busy test users), counting under a Redis
prefix of the test's own that is deleted afterwards.

Import the fixture you use into a test module (`from tests.limits_support import ...`).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask

from common.settings import Settings
from models.db import db
from tests.clients import GraphQLClient
from web import create_app

SHIPPED = Settings()  # the defaults a deployment gets without setting anything


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def production(settings: Settings) -> Iterator[Any]:
    """`production(**overrides)`: the service as deployed (APP_ENV=production, the shipped
    rate limits) over the suite's database, Redis and identity provider."""
    made: list[Flask] = []

    def make(base: Settings = settings, **overrides: Any) -> Flask:
        shipped = {
            "sms_rate_limit": SHIPPED.sms_rate_limit,
            "login_rate_limit": SHIPPED.login_rate_limit,
            "login_address_rate_limit": SHIPPED.login_address_rate_limit,
            "login_username_rate_limit": SHIPPED.login_username_rate_limit,
            "session_address_rate_limit": SHIPPED.session_address_rate_limit,
        }
        configured = replace(
            base,
            env="production",
            secret_key="x" * 40,
            rate_limit_prefix=f"{settings.rate_limit_prefix}-{uuid.uuid4().hex[:8]}",
            **{**shipped, **overrides},
        )
        made.append(create_app(configured))
        return made[-1]

    yield make
    for application in made:
        limits = application.extensions["rate_limits"]
        if limits.limiter.storage.check():  # a deliberately unreachable Redis holds nothing
            limits.limiter.reset()
        limits.close()
        with application.app_context():
            for engine in db.engines.values():
                engine.dispose()
        application.extensions["health_redis"].close()


def client(application: Flask, token: str | None = None) -> GraphQLClient:
    return GraphQLClient(application.test_client(), token)


def rate_limited(response: Any) -> dict[str, Any] | None:
    """The RATE_LIMITED error of a GraphQL response, or None if it has none."""
    for error in response.get_json().get("errors") or ():
        if error.get("extensions", {}).get("code") == "RATE_LIMITED":
            return error
    return None
