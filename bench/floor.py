"""The floor: the bare work of createOrder, for comparison with the service.

A raw WSGI app, no framework: parse the JSON body, INSERT one row with psycopg (autocommit,
so one round trip that commits), LPUSH one message to Redis, answer a small JSON body shaped
like the service's. Nothing else: no auth, no GraphQL, no ORM, no Celery. Run it as the harness
does, `gunicorn -w 2 bench.floor:app`, with

    FLOOR_DATABASE_URL  a postgresql:// URL; the table `bench_floor_orders` must exist
                        (`CREATE_TABLE` below)
    FLOOR_REDIS_URL     a redis:// URL
    FLOOR_REDIS_LIST    the list each request LPUSHes to

`GET` on any path answers 200 "ok" (readiness).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import psycopg
import redis

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_floor_orders (
    id uuid PRIMARY KEY,
    price numeric(12, 2) NOT NULL,
    details text,
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
INSERT = (
    "INSERT INTO bench_floor_orders (id, price, details, idempotency_key) VALUES (%s, %s, %s, %s)"
)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Connections:
    """One PostgreSQL and one Redis connection per worker process, opened after the fork."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.db: psycopg.Connection[Any] | None = None
        self.redis: redis.Redis | None = None

    def get(self) -> tuple[psycopg.Connection[Any], redis.Redis]:
        if self.pid != os.getpid() or self.db is None or self.db.closed or self.redis is None:
            self.db = psycopg.connect(os.environ["FLOOR_DATABASE_URL"], autocommit=True)
            self.redis = redis.Redis.from_url(os.environ["FLOOR_REDIS_URL"])
            self.pid = os.getpid()
        return self.db, self.redis


_connections = _Connections()
_LIST = os.environ.get("FLOOR_REDIS_LIST", "bench-floor")


def _respond(start_response: StartResponse, status: str, body: bytes) -> Iterable[bytes]:
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point."""
    if environ["REQUEST_METHOD"] != "POST":
        return _respond(start_response, "200 OK", b'"ok"')
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        fields = json.loads(environ["wsgi.input"].read(length))["variables"]["input"]
        price = Decimal(str(fields["price"]))
    except (ValueError, KeyError, TypeError, ArithmeticError):
        return _respond(start_response, "400 Bad Request", b'{"errors":[{"message":"bad body"}]}')
    order_id = uuid.uuid4()
    db, queue = _connections.get()
    db.execute(INSERT, (order_id, price, fields.get("orderDetails"), fields.get("idempotencyKey")))
    queue.lpush(_LIST, json.dumps({"id": str(order_id)}))
    answer = {"data": {"createOrder": {"success": True, "order": {"id": str(order_id)}}}}
    return _respond(start_response, "200 OK", json.dumps(answer, separators=(",", ":")).encode())
