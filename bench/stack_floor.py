"""The stack floor: the floor's bare work of createOrder, through the service's stack.

The same work as `bench/floor.py` (parse the body, INSERT one row, LPUSH one message, answer),
done the way the brief's stack does it and nothing more: Flask routes the request, Ariadne
executes a schema-first GraphQL mutation (its document parsed and validated once, as the
service caches it), Flask-SQLAlchemy's session runs the INSERT on a pooled connection with no
transaction around it (one round trip, as the service's createOrder), redis-py LPUSHes the
message. No auth, no checks, no idempotency, no logs, no metrics, no Celery.

It answers how close to the floor the stack itself gets; the service, which does more, cannot
be faster. The harness serves it as it serves the floor, `gunicorn -w 2 bench.stack_floor:app`
(gunicorn's sync worker), with the floor's variables:

    FLOOR_DATABASE_URL  a postgresql:// URL; the table `bench_floor_orders` must exist
    FLOOR_REDIS_URL     a redis:// URL
    FLOOR_REDIS_LIST    the list each request LPUSHes to

`GET /` answers 200 "ok" (readiness).
"""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal
from functools import lru_cache
from typing import Any

import redis
from ariadne import MutationType, QueryType, gql, graphql_sync, make_executable_schema
from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from graphql import DocumentNode, parse, validate
from sqlalchemy import text

SCHEMA = gql("""
    type Query { ok: Boolean! }
    type Mutation { createOrder(input: CreateOrderInput!): CreateOrderPayload! }
    input CreateOrderInput { price: String!, orderDetails: String, idempotencyKey: String }
    type CreateOrderPayload { success: Boolean!, replayed: Boolean!, order: Order }
    type Order { id: ID!, status: String!, totalPrice: String! }
""")
# bench.floor's INSERT, with SQLAlchemy's named parameters.
STATEMENT = text(
    "INSERT INTO bench_floor_orders (id, price, details, idempotency_key) "
    "VALUES (:id, :price, :details, :key)"
)
LIST = os.environ.get("FLOOR_REDIS_LIST", "bench-floor")

query = QueryType()
mutation = MutationType()
db = SQLAlchemy()
queue = redis.Redis.from_url(os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/9"))


@query.field("ok")
def resolve_ok(*_: Any) -> bool:
    return True


@mutation.field("createOrder")
def resolve_create_order(_: Any, __: Any, input: dict[str, Any]) -> dict[str, Any]:
    price = Decimal(input["price"])
    order_id = uuid.uuid4()
    db.session.execute(
        STATEMENT,
        {
            "id": order_id,
            "price": price,
            "details": input.get("orderDetails"),
            "key": input.get("idempotencyKey"),
        },
    )
    queue.lpush(LIST, json.dumps({"id": str(order_id)}))
    return {
        "success": True,
        "replayed": False,
        "order": {"id": order_id, "status": "NEW", "totalPrice": str(price)},
    }


schema = make_executable_schema(SCHEMA, query, mutation)


@lru_cache(maxsize=64)
def prepared(document: str) -> tuple[DocumentNode, tuple]:
    parsed = parse(document)
    return parsed, tuple(validate(schema, parsed))


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "FLOOR_DATABASE_URL", "postgresql:///orders_bench"
        ).replace("postgresql://", "postgresql+psycopg://", 1),
        # One statement, committed as it ends: no BEGIN, no COMMIT.
        SQLALCHEMY_ENGINE_OPTIONS={"isolation_level": "AUTOCOMMIT"},
    )
    app.json.sort_keys = False  # as the service answers
    db.init_app(app)

    @app.get("/")
    def ready() -> str:
        return "ok"

    @app.post("/graphql")
    def graphql() -> Any:
        data = json.loads(request.get_data(cache=False))
        document, errors = prepared(data["query"])
        _, result = graphql_sync(
            schema,
            data,
            query_document=document,
            query_validator=lambda *_args, **_kwargs: list(errors),
        )
        return jsonify(result), 200 if "data" in result else 400

    return app


app = create_app()
