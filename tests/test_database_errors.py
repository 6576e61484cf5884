"""What a client is told when the database refuses a request's change or cannot be reached.

A refused change (a unique key a racing duplicate took first) is a CONFLICT and never "try
again": repeating a createOrder without an idempotencyKey would place a second order. Only a
lost or unreachable database answers 503, with Retry-After.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError, PendingRollbackError

from models.db import db
from tests.clients import GraphQLClient
from tests.conftest import REDIS_URL, SERVER_URL, _admin_dsn
from web import database_errors

PLACE = 'createOrder(input: {price: 10, orderDetails: "Deliver ASAP"}) { success order { id } }'
PLACE_ONE = f"mutation {{ {PLACE} }}"
PLACE_TWO = f"mutation {{ first: {PLACE} second: {PLACE} }}"


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of this test's own, dropped afterwards: the test changes its schema."""
    name = f"orders_conflict_{uuid.uuid4().hex[:10]}"
    admin = _admin_dsn(SERVER_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield (
        make_url(admin)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def strict_app(make_app, own_database: str) -> Iterator[Flask]:
    """The service over a database that also keeps a shop's rule of its own: a customer never
    places the same order twice. The key is deferred, so the database checks it when the
    transaction commits, where a racing duplicate shows itself. (The service's own keys cannot
    clash through the API: each of its INSERTs names its conflict target.)"""
    queue = f"conflict-{uuid.uuid4().hex[:8]}"
    app = make_app(database_url=own_database, celery_queue=queue)
    with app.app_context():
        upgrade()
        db.session.execute(
            text(
                "ALTER TABLE orders ADD CONSTRAINT uq_orders_once UNIQUE (customer_id, details) "
                "DEFERRABLE INITIALLY DEFERRED"
            )
        )
        db.session.commit()
    yield app
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()
    client = redis.Redis.from_url(REDIS_URL)  # the published tasks and kombu's bindings
    if leftovers := client.keys(f"*{queue}*"):
        client.delete(*leftovers)
    client.close()


def _orders(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(text("SELECT count(*) FROM orders"))
        db.session.rollback()
    return count


def _error(response: Any) -> dict[str, Any]:
    (error,) = response.get_json()["errors"]
    return error


def test_a_unique_violation_at_commit_is_a_conflict_not_try_again(strict_app, idp):
    client = GraphQLClient(strict_app.test_client(), idp.issue_access_token("jane"))

    response = client.post(PLACE_TWO)  # both execute; the key is checked at COMMIT

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["data"] is None  # no "success": nothing was saved
    assert _error(response)["extensions"]["code"] == "CONFLICT"
    assert "Retry-After" not in response.headers
    assert _orders(strict_app) == 0


def test_of_two_concurrent_duplicates_one_is_placed_and_the_other_is_a_conflict(strict_app, idp):
    token = idp.issue_access_token("jane")
    warm = GraphQLClient(strict_app.test_client(), token)
    warm.execute("{ me { id } }")  # provisioned: the two orders race for the key alone
    start = threading.Event()
    responses: list[Any] = []

    def place() -> None:
        client = GraphQLClient(strict_app.test_client(), token)
        start.wait()
        responses.append(client.post(PLACE_ONE))

    threads = [threading.Thread(target=place) for _ in range(2)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join()

    assert [response.status_code for response in responses] == [200, 200]
    bodies = [response.get_json() for response in responses]
    placed = [body for body in bodies if "errors" not in body]
    refused = [body for body in bodies if "errors" in body]
    assert len(placed) == len(refused) == 1
    assert placed[0]["data"]["createOrder"]["success"] is True
    (error,) = refused[0]["errors"]
    assert error["extensions"]["code"] == "CONFLICT"
    assert all("Retry-After" not in response.headers for response in responses)
    assert _orders(strict_app) == 1


def _assert_try_again(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert _error(response)["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert int(response.headers["Retry-After"]) > 0


def _terminate_pooled_connection(app: Flask) -> None:
    """End the app's pooled connection on the server side, as a database restart would, and
    wait until its backend is gone."""
    with app.app_context():
        pid = db.session.scalar(text("SELECT pg_backend_pid()"))
        db.session.rollback()
    with psycopg.connect(_admin_dsn(SERVER_URL), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 5
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.01)


@pytest.mark.parametrize("document", [PLACE_ONE, "{ myOrders { id } }"])
def test_a_connection_lost_between_requests_is_503_with_retry_after(
    make_app, idp, committed, document
):
    app = make_app()
    client = GraphQLClient(app.test_client(), idp.issue_access_token("jane"))
    client.execute("{ me { id } }")  # provisioned
    client.execute("{ myOrders { id } }")  # the token's caller remembered: no query before the
    # resolver's own; one connection left in the pool
    before = _orders(app)

    # Checked again within the pool's ping interval: the request finds the dead connection.
    _terminate_pooled_connection(app)
    response = client.post(document)

    _assert_try_again(response)
    assert _orders(app) == before
    assert client.execute("{ myOrders { id } }")  # the pool has a new connection


def test_the_fields_after_a_lost_connection_are_the_same_outage_not_bugs(
    make_app, idp, committed, caplog
):
    """The first field finds the connection dead; the next ones find the session waiting for
    its rollback. That is the one outage: a WARNING, never an ERROR with a traceback (which
    Sentry reports and the errors alert counts)."""
    app = make_app()
    client = GraphQLClient(app.test_client(), idp.issue_access_token("jane"))
    client.execute("{ me { id } }")
    client.execute("{ myOrders { id } }")

    _terminate_pooled_connection(app)
    with caplog.at_level(logging.WARNING):
        response = client.post("{ a: myOrders { id } b: myOrders { id } c: me { id } }")

    _assert_try_again(response)
    assert [r.levelname for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("database unavailable" in r.getMessage() for r in caplog.records)


def test_a_session_left_waiting_for_its_rollback_by_a_lost_connection_is_the_outage(make_app):
    """What the fields after the first meet, within one transaction (gunicorn's threads, a
    mutation's savepoints): SQLAlchemy's PendingRollbackError, classified as the outage."""
    app = make_app()
    with app.app_context():
        session = db.session()
        session.execute(text("SELECT 1"))
        pid = session.scalar(text("SELECT pg_backend_pid()"))
        with psycopg.connect(_admin_dsn(SERVER_URL), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(OperationalError) as lost:
            session.execute(text("SELECT 1"))
        with pytest.raises(PendingRollbackError) as waiting:
            session.execute(text("SELECT 1"))
        session.rollback()

    assert database_errors.classify(lost.value) is database_errors.UNAVAILABLE
    assert database_errors.classify(waiting.value) is database_errors.UNAVAILABLE


def test_an_unreachable_database_is_503_with_retry_after(make_app, idp):
    app = make_app(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    client = GraphQLClient(app.test_client(), idp.issue_access_token("jane"))

    _assert_try_again(client.post("{ me { id } }"))
    _assert_try_again(client.post(PLACE_ONE))
