"""The schema is built from schema.graphql with every root field bound, and the committed
migrations match the models, go down to nothing and come back up."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from alembic import command
from ariadne import QueryType, load_schema_from_path, make_executable_schema
from flask_migrate import downgrade, upgrade
from graphql import GraphQLObjectType, GraphQLScalarType
from graphql import build_schema as build_sdl_schema
from sqlalchemy import inspect, make_url, text
from sqlalchemy.exc import IntegrityError

from models.db import db
from tests.factories import OrderFactory
from web import create_app, migrate
from web.graphql import SCHEMA_PATH, build_schema
from web.resolvers import bindables

ROOT = Path(__file__).resolve().parent.parent
TABLES = {"customers", "orders", "order_events", "idempotency_keys"}


# --- schema ---------------------------------------------------------------------------------


def test_schema_builds_from_schema_graphql():
    schema = build_schema()
    sdl = build_sdl_schema(SCHEMA_PATH.read_text())

    for root in ("Query", "Mutation"):
        built = schema.get_type(root)
        assert isinstance(built, GraphQLObjectType)
        assert set(built.fields) == set(sdl.get_type(root).fields)  # type: ignore[union-attr]
    assert set(schema.type_map) == set(sdl.type_map)


@pytest.mark.parametrize("root", ["Query", "Mutation"])
def test_every_root_field_has_a_resolver(root):
    built = build_schema().get_type(root)
    assert isinstance(built, GraphQLObjectType)

    unbound = [name for name, field in built.fields.items() if field.resolve is None]

    assert unbound == []


@pytest.mark.parametrize("name", ["Decimal", "DateTime"])
def test_custom_scalars_are_bound(name):
    scalar = build_schema().get_type(name)

    assert isinstance(scalar, GraphQLScalarType)
    assert scalar.serialize is not GraphQLScalarType.serialize
    assert scalar.parse_value is not GraphQLScalarType.parse_value


def test_binding_a_resolver_to_a_field_missing_from_the_schema_fails_the_build():
    stray = QueryType()
    stray.set_field("ordersShippedYesterday", lambda *_: [])

    with pytest.raises(ValueError, match="ordersShippedYesterday"):
        make_executable_schema(
            load_schema_from_path(str(SCHEMA_PATH)), *bindables, stray, convert_names_case=True
        )


def test_the_documented_operations_are_in_the_schema():
    schema = build_sdl_schema(SCHEMA_PATH.read_text())
    query, mutation = schema.query_type, schema.mutation_type
    assert query is not None
    assert mutation is not None

    assert {
        "customerByCode",
        "allCustomers",
        "allOrders",
        "myOrders",
        "ordersByCustomer",
        "userInfo",
        "order",
        "customer",
        "orders",
        "customers",
    } <= set(query.fields)
    assert {
        "login",
        "refreshToken",
        "createCustomer",
        "updateCustomer",
        "createOrder",
        "confirmOrder",
        "cancelOrder",
    } <= set(mutation.fields)
    order_input = schema.get_type("CreateOrderInput")
    assert {"price", "userId", "orderDetails", "customerId", "customerCode", "item"} <= set(
        order_input.fields  # type: ignore[union-attr]
    )


# --- migrations -----------------------------------------------------------------------------


def test_models_and_migrations_agree(app):
    with app.app_context():
        command.check(migrate.get_config())  # raises, listing the differences, if they drift


def test_flask_db_check_finds_no_pending_migration(database_url):
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("APP_", "FLASK_", "DATABASE_"))
    }
    environment["DATABASE_URL"] = database_url
    flask = Path(sys.executable).with_name("flask")

    result = subprocess.run(
        [str(flask), "--app", "web:create_app", "db", "check"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


@pytest.fixture
def scratch_app(settings) -> Iterator:
    """An app on an empty database of its own, dropped afterwards."""
    name = f"orders_scratch_{uuid.uuid4().hex[:10]}"
    server = make_url(settings.database_url)
    admin = server.set(drivername="postgresql", database="postgres")
    admin = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    application = create_app(replace(settings, database_url=url))
    try:
        yield application
    finally:
        with application.app_context():
            db.engine.dispose()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table_names() -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_downgrade_to_base_then_upgrade_again(scratch_app):
    with scratch_app.app_context():
        upgrade()
        assert table_names() >= TABLES

        downgrade(revision="base")
        assert table_names() == set()

        upgrade()
        assert table_names() >= TABLES
        command.check(migrate.get_config())


# --- what the database itself enforces ------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "status = 'SHIPPED'",
        "quantity = 0",
        "total = 0",
        "unit_price = -1",
    ],
)
def test_database_refuses_impossible_orders(session, change):
    order = OrderFactory()

    with pytest.raises(IntegrityError, match="ck_orders_"), session.begin_nested():
        session.execute(text(f"UPDATE orders SET {change} WHERE id = :id"), {"id": order.id})  # noqa: S608


def test_money_columns_are_exact_decimals(session):
    columns = session.execute(
        text(
            "SELECT column_name, data_type, numeric_precision, numeric_scale "
            "FROM information_schema.columns "
            "WHERE table_name = 'orders' AND column_name IN ('unit_price', 'total') "
            "ORDER BY column_name"
        )
    ).all()

    assert [tuple(column) for column in columns] == [
        ("total", "numeric", 12, 2),
        ("unit_price", "numeric", 12, 2),
    ]


def test_a_customers_order_list_has_an_index_newest_first(session):
    indexes = {
        index["name"]: index["column_names"]
        for index in inspect(session.connection()).get_indexes("orders")
    }

    assert ["customer_id", "created_at", "id"] in indexes.values()
    assert ["customer_id", "status", "created_at", "id"] in indexes.values()
