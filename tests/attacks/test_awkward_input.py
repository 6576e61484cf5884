"""Attack: a typo or a stranger sends awkward input. Odd cursors, lone UTF-16 surrogates, NUL,
huge and deeply nested values, wrong types: every argument of every operation, as a variable
and as a literal, by an admin and by a customer, gets a structured error and never a 500, and
a refused request writes nothing. Production mode, real PostgreSQL and Redis, the development
identity provider over HTTP.

The operations and their arguments are read from the executable schema, so an argument added
to `schema.graphql` is attacked here without a change to this file.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import product
from typing import Any

import pytest
from flask import Flask
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    get_named_type,
    is_leaf_type,
    is_non_null_type,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from models import Customer
from models.actors import Actor
from models.customers import create_customer, update_customer
from models.db import db
from models.errors import DomainError, ErrorCode
from models.notifications import Notification
from models.orders import cancel_order
from models.pagination import decode_cursor, encode_cursor
from models.placing import create_order
from tests.clients import GraphQLClient
from tests.factories import ADMIN_SUB, JANE_SUB, CustomerFactory, OrderFactory
from web import create_app
from web.graphql import build_schema

SCHEMA = build_schema()


# --- the service, the callers and what they may touch ----------------------------------------


@pytest.fixture(scope="module")
def attack_app(app: Flask, settings) -> Iterator[Flask]:
    """The service in production mode, one for the module (as `production_app` makes it, but
    building an app takes a while; every test signs in with tokens of its own). `app` is there
    for the migrations it applies."""
    application = create_app(replace(settings, env="production", secret_key="x" * 40))
    yield application
    with application.app_context():
        for engine in db.engines.values():
            engine.dispose()
    application.extensions["health_redis"].close()


@dataclass
class World:
    """Two signed-in callers and a few rows of every kind, for arguments that name them."""

    clients: dict[str, GraphQLClient]
    refs: dict[str, str]


@pytest.fixture
def world(attack_app: Flask, session, idp) -> World:
    """An admin and a customer (Jane) signed in, a shop with code TAKEN1, an order of each,
    and a FAILED notification, all rolled back with the test."""
    clients = {
        name: GraphQLClient(attack_app.test_client(), idp.issue_access_token(name))
        for name in ("admin", "jane")
    }
    for client in clients.values():
        client.execute("{ me { id } }")  # provisioned now, so no later request writes that
    jane = session.get_one(Customer, uuid.UUID(JANE_SUB))
    taken = CustomerFactory(code="TAKEN1", name="Taken Shop")
    order = OrderFactory(customer=jane)
    other = OrderFactory(customer=taken)
    notification = Notification(
        id=uuid.uuid4(),
        order_id=order.id,
        kind="ORDER_PLACED",
        body="Order placed",
        status="FAILED",
        attempts=5,
    )
    session.add(notification)
    session.commit()
    refs = {
        "jane": str(jane.id),
        "customer": str(taken.id),
        "order": str(order.id),
        "other_order": str(other.id),
        "notification": str(notification.id),
        "cursor": encode_cursor(order.created_at, order.id),
        "sub": JANE_SUB,
    }
    return World(clients, refs)


TABLES = tuple(table.name for table in db.metadata.sorted_tables)


def database_state(session) -> dict[str, tuple[int, str]]:
    """Every table's row count and a digest of its rows: any INSERT, UPDATE or DELETE shows."""
    digest = "md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), ''))"
    parts = " UNION ALL ".join(
        f"SELECT '{table}', count(*), {digest} FROM {table} r"  # noqa: S608 - our table names
        for table in TABLES
    )
    return {name: (count, digest) for name, count, digest in session.execute(text(parts))}


def assert_structured(response) -> dict[str, Any]:
    """A JSON GraphQL response that a client can read: never a 5xx, never a resolver's crash
    (which GraphQL hides as INTERNAL_SERVER_ERROR inside a 200), never a stack trace."""
    raw = response.get_data(as_text=True)
    assert response.status_code < 500, raw
    assert response.is_json, raw
    body = response.get_json()
    assert isinstance(body, dict)
    assert body, raw
    assert body.keys() <= {"data", "errors"}, body
    assert "Traceback" not in raw, raw
    assert 'File "' not in raw, raw
    for error in body.get("errors", ()):
        assert isinstance(error["message"], str), error
        assert error["message"], error
        assert error["message"] != "Internal server error", body
        assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", body
    return body


def succeeded(body: dict[str, Any]) -> bool:
    """Whether a mutation in the answer says it did what it was asked (and so may write)."""
    return any(
        isinstance(value, dict) and value.get("success") is True
        for value in (body.get("data") or {}).values()
    )


# --- the operations, read from the schema ---------------------------------------------------


@dataclass(frozen=True)
class Operation:
    kind: str  # "query" or "mutation"
    name: str
    field: GraphQLField

    def __str__(self) -> str:
        return f"{self.kind}.{self.name}"


OPERATIONS = [
    Operation(kind, name, field)
    for kind, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type))
    if root is not None
    for name, field in root.fields.items()
]


def unwrap(type_: GraphQLInputType) -> GraphQLInputType:
    return type_.of_type if isinstance(type_, GraphQLNonNull) else type_


@dataclass(frozen=True)
class Slot:
    """Where text goes: an argument of an operation, or a field inside an input object."""

    operation: Operation
    path: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.operation.name}.{'.'.join(self.path)}"


def text_slots() -> list[Slot]:
    """Every String and ID argument and input field of every operation."""
    slots: list[Slot] = []

    def walk(operation: Operation, path: tuple[str, ...], type_: GraphQLInputType) -> None:
        named = get_named_type(type_)
        if isinstance(named, GraphQLInputObjectType):
            for name, field in named.fields.items():
                walk(operation, (*path, name), field.type)
        elif isinstance(named, GraphQLScalarType) and named.name in ("String", "ID"):
            slots.append(Slot(operation, path))

    for operation in OPERATIONS:
        for name, argument in operation.field.args.items():
            walk(operation, (name,), argument.type)
    return slots


SLOTS = text_slots()
TEXT_OPERATIONS = [
    operation for operation in OPERATIONS if any(s.operation == operation for s in SLOTS)
]


def slots_of(operation: Operation) -> list[Slot]:
    return [slot for slot in SLOTS if slot.operation == operation]


def selection(type_: GraphQLOutputType, depth: int = 2) -> str:
    """What to ask of a field's result: its scalars, and those of the objects inside it."""
    named = get_named_type(type_)
    if is_leaf_type(named):
        return ""
    assert isinstance(named, GraphQLObjectType)
    parts = []
    for name, field in named.fields.items():
        if any(is_non_null_type(argument.type) for argument in field.args.values()):
            continue
        if is_leaf_type(get_named_type(field.type)):
            parts.append(name)
        elif depth > 1:
            parts.append(f"{name} {selection(field.type, depth - 1)}")
    return "{ " + " ".join(parts or ["__typename"]) + " }"


# --- values, and how they are written --------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A row of the world, named before the world exists."""

    name: str


@dataclass(frozen=True)
class EnumName:
    """An enum value: a bare name in a literal, a string in a variable."""

    name: str


def resolve(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, Ref):
        return refs[value.name]
    if isinstance(value, dict):
        return {key: resolve(item, refs) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, refs) for item in value]
    return value


def as_json(value: Any) -> Any:
    if isinstance(value, EnumName):
        return value.name
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return value


def literal(value: Any, *, ascii_only: bool = True) -> str:
    """`value` written into the document. JSON's string escapes are GraphQL's too; with
    `ascii_only` False a surrogate or a NUL goes in as the character itself."""
    if isinstance(value, EnumName):
        return value.name
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, list):
        return "[" + ", ".join(literal(item, ascii_only=ascii_only) for item in value) + "]"
    items = (f"{key}: {literal(item, ascii_only=ascii_only)}" for key, item in value.items())
    return "{" + ", ".join(items) + "}"


def document(
    operation: Operation,
    arguments: dict[str, Any],
    *,
    as_variables: frozenset[str] = frozenset(),
    ascii_only: bool = True,
) -> tuple[str, dict[str, Any]]:
    """A document calling `operation` with `arguments`, those in `as_variables` sent as
    variables, the rest written as literals; and its variables."""
    definitions, written, variables = [], [], {}
    for name, value in arguments.items():
        if name in as_variables:
            definitions.append(f"${name}: {operation.field.args[name].type}")
            written.append(f"{name}: ${name}")
            variables[name] = as_json(value)
        else:
            written.append(f"{name}: {literal(value, ascii_only=ascii_only)}")
    header = f"({', '.join(definitions)})" if definitions else ""
    call = f"({', '.join(written)})" if written else ""
    query = (
        f"{operation.kind}{header} {{ {operation.name}{call} {selection(operation.field.type)} }}"
    )
    return query, variables


PLACEHOLDERS: dict[str, Any] = {
    "ID": Ref("order"),
    "String": "x",
    "Int": 1,
    "Float": 1.0,
    "Boolean": True,
    "Decimal": "100.00",
    "DateTime": "2026-01-01T00:00:00+00:00",
}


def placeholder(type_: GraphQLInputType) -> Any:
    """A plausible value of a type: its required fields filled, for an input object."""
    named = get_named_type(type_)
    if isinstance(named, GraphQLInputObjectType):
        return {
            name: placeholder(field.type)
            for name, field in named.fields.items()
            if is_non_null_type(field.type)
        }
    if isinstance(named, GraphQLEnumType):
        return EnumName(next(iter(named.values)))
    return PLACEHOLDERS[named.name]


def arguments_with(slot: Slot, value: Any) -> dict[str, Any]:
    """The operation's required arguments as placeholders, and `value` in `slot`."""
    field = slot.operation.field
    arguments = {
        name: placeholder(argument.type)
        for name, argument in field.args.items()
        if is_non_null_type(argument.type)
    }
    head, *inside = slot.path
    if not inside:
        arguments[head] = value
        return arguments
    container = arguments.setdefault(head, placeholder(field.args[head].type))
    for name in inside[:-1]:
        container = container.setdefault(name, {})
    container[inside[-1]] = value
    return arguments


# --- cursors ---------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def position(created: str, row_id: object = "00000000-0000-0000-0000-000000000001") -> str:
    return b64(json.dumps([created, row_id]).encode())


ODD_CURSORS = {
    "an object": b64(b'{"a":1}'),
    "an object of two": b64(b'{"a":1,"b":2}'),
    "a list of three": b64(b"[1,2,3]"),
    "a string": b64(b'"x"'),
    "a number": b64(b"42"),
    "null": b64(b"null"),
    "5000 open brackets": b64(b"[" * 5000),
    "5000 nested lists": b64(b"[" * 5000 + b"]" * 5000),
    "numbers for both": b64(b"[1,2]"),
    "a number for the id": position("2026-01-01T00:00:00+00:00", 42),
    "a list for the id": position("2026-01-01T00:00:00+00:00", []),
    "null for the id": position("2026-01-01T00:00:00+00:00", None),
    "an object for the time": b64(b'[{"a":1},"00000000-0000-0000-0000-000000000001"]'),
    "a time before year 1 in UTC": position("0001-01-01T00:00:00+14:00"),
    "a time without a zone": position("2026-01-01T00:00:00"),
    "a date alone": position("2026-01-01"),
    "a year past 9999": position("10000-01-01T00:00:00+00:00"),
    "a 5000-digit number": b64(b"[" + b"9" * 5000 + b",1]"),
    "a lone surrogate inside": b64(b'["\\ud800","00000000-0000-0000-0000-000000000001"]'),
    "a NUL after the time": position("2026-01-01T00:00:00+00:00\x00"),
    "an id in braces": position("2026-01-01T00:00:00+00:00", f"{{{uuid.UUID(int=1)}}}"),
    "an id as a URN": position("2026-01-01T00:00:00+00:00", uuid.UUID(int=1).urn),
    "bytes that are not UTF-8": b64(b'["\xff\xfe", "x"]'),
    "UTF-16 JSON": b64(
        json.dumps(["2026-01-01T00:00:00+00:00", str(uuid.UUID(int=1))]).encode("utf-16")
    ),
    "characters outside base64": "!!!!" + position("2026-01-01T00:00:00+00:00"),
    "a valid cursor too long": position("2026-01-01T00:00:00+00:00") + "A" * 200,
    "one character": "A",
    "a lone surrogate": "\ud800",
    "non-BMP characters": "\U0001f600" * 4,
}
# Every list field pages with `after`: each answers an odd cursor the same way.
PAGED = {
    "allCustomers": "allCustomers(after: $after) { id }",
    "customers": "customers(after: $after) { nodes { id } }",
    "allOrders": "allOrders(after: $after) { id }",
    "myOrders": "myOrders(after: $after) { id }",
    "ordersByCustomer": 'ordersByCustomer(customerCode: "TAKEN1", after: $after) { id }',
    "orders": "orders(after: $after) { nodes { id } }",
    "notifications": "notifications(after: $after) { nodes { id } }",
    "orders (of a customer)": "me { orders(after: $after) { nodes { id } } }",
}


@pytest.mark.parametrize("field", PAGED.values(), ids=PAGED.keys())
def test_an_odd_cursor_is_an_invalid_after_in_every_list(world, session, field):
    before = database_state(session)
    query = f"query($after: String) {{ {field} }}"

    for name, cursor in ODD_CURSORS.items():
        response = world.clients["admin"].post(query, {"after": cursor})

        body = assert_structured(response)
        [error] = body["errors"]
        if cursor == "\ud800":  # not text at all: the request is refused before any field
            assert response.status_code == 400
            assert error["extensions"]["variable"] == "after"
        else:
            assert response.status_code == 200, name
            assert error["message"] == "after is not a valid cursor", name
            assert error["extensions"] == {
                "code": "BAD_USER_INPUT",
                "field": "after",
                "reason": "INVALID",
            }, name
    assert database_state(session) == before


@pytest.mark.parametrize("cursor", ODD_CURSORS.values(), ids=ODD_CURSORS.keys())
def test_decode_cursor_refuses_what_is_not_ours_as_invalid_after(cursor):
    with pytest.raises(DomainError) as refused:
        decode_cursor(cursor)

    [error] = refused.value.errors
    assert (error.field, error.code) == ("after", ErrorCode.INVALID)


def test_a_cursor_the_service_gave_still_pages(world):
    query = "query($after: String) { orders(first: 1, after: $after) { nodes { id } "
    query += "pageInfo { endCursor } } }"
    first = world.clients["admin"].execute(query)["orders"]

    second = world.clients["admin"].execute(query, {"after": first["pageInfo"]["endCursor"]})

    pages = [first["nodes"], second["orders"]["nodes"]]
    assert pages == [[{"id": world.refs["other_order"]}], [{"id": world.refs["order"]}]]


def test_every_field_of_a_confirm_or_cancel_payload_answers(world):
    # Found by asking every operation for every field: `replayed` was null, a 500 in disguise.
    order = world.refs["order"]
    fields = "success replayed order { status }"

    confirmed = world.clients["jane"].execute(
        f'mutation {{ confirmOrder(orderId: "{order}") {{ {fields} }} }}'
    )["confirmOrder"]
    cancelled = world.clients["admin"].execute(
        f'mutation {{ cancelOrder(orderId: "{order}") {{ {fields} }} }}'
    )["cancelOrder"]

    assert confirmed == {"success": True, "replayed": False, "order": {"status": "CONFIRMED"}}
    assert cancelled == {"success": True, "replayed": False, "order": {"status": "CANCELLED"}}


# --- lone surrogates in every text argument -------------------------------------------------


@pytest.mark.parametrize("operation", TEXT_OPERATIONS, ids=str)
def test_a_lone_surrogate_in_a_variable_is_refused_naming_where_it_is(world, session, operation):
    before = database_state(session)

    sent = (("admin", "\ud800"), ("jane", "a\udfffb"))

    for slot, (caller, surrogate) in product(slots_of(operation), sent):
        arguments = resolve(arguments_with(slot, surrogate), world.refs)
        query, variables = document(slot.operation, arguments, as_variables=frozenset(arguments))
        response = world.clients[caller].post(query, variables)

        assert response.status_code == 400, response.get_data(as_text=True)
        body = assert_structured(response)
        assert "data" not in body
        [error] = body["errors"]
        path = ".".join(slot.path)
        assert error["extensions"] == {
            "code": "BAD_USER_INPUT",
            "field": path,
            "reason": "INVALID",
            "variable": slot.path[0],
        }
        code_point = f"U+{ord(surrogate.strip('ab')):04X}"
        assert error["message"].startswith(f"Variable '${slot.path[0]}' got invalid value at")
        assert f"'{path}'" in error["message"]
        assert f"lone UTF-16 surrogate ({code_point})" in error["message"]
    assert database_state(session) == before


@pytest.mark.parametrize("operation", TEXT_OPERATIONS, ids=str)
def test_a_lone_surrogate_in_a_literal_is_refused_naming_the_field(world, session, operation):
    before = database_state(session)
    # Escaped as JSON writes it (\ud800), escaped as GraphQL may (\u{DBFF}), and the character.
    forms = (
        ("admin", "\ud800", "\\ud800"),
        ("jane", "\udbff", "\\u{DBFF}"),
        ("admin", "\udfff", "\udfff"),
    )

    for slot, (caller, surrogate, written_as) in product(slots_of(operation), forms):
        arguments = resolve(arguments_with(slot, surrogate), world.refs)
        query, _ = document(slot.operation, arguments, ascii_only=False)
        query = query.replace(surrogate, written_as)

        response = world.clients[caller].post(query)

        assert response.status_code == 400, response.get_data(as_text=True)
        [error] = assert_structured(response)["errors"]
        assert error["extensions"] == {
            "code": "BAD_USER_INPUT",
            "field": slot.path[-1],
            "reason": "INVALID",
        }
        assert error["message"].startswith(f"The string given to '{slot.path[-1]}' (line 1")
        assert f"(U+{ord(surrogate):04X})" in error["message"]
        assert error["locations"] == [{"line": 1, "column": query.index(written_as) + 1}]
    assert database_state(session) == before


def test_a_lone_surrogate_in_a_comment_or_a_default_is_refused_without_a_field(world):
    for query in (
        "# \udc00\n{ me { id } }",
        '{ myOrders(status: ["NEW", "\\udc00"]) { id } }',
        'query($code: String! = "\\udc00") { customerByCode(code: $code) { id } }',
        '{ customerByCode(code: # "\udc00"\n "TAKEN1") { id } }',
    ):
        response = world.clients["jane"].post(query)

        assert response.status_code == 400
        [error] = assert_structured(response)["errors"]
        assert error["extensions"]["field"] is None
        assert error["message"].startswith("The document (line ")
        assert "(U+DC00)" in error["message"]


def test_other_bad_escapes_are_still_graphql_syntax_errors(world):
    response = world.clients["jane"].post('{ customerByCode(code: "\\uZZZZ") { id } }')

    assert response.status_code == 400
    [error] = assert_structured(response)["errors"]
    assert error["message"] == "Syntax Error: Invalid Unicode escape sequence: '\\uZZZZ'."


def test_a_valid_surrogate_pair_is_text_and_is_stored_whole(world, session):
    name = "Duka la \U0001f600 Mama"
    for query, variables in (
        (
            "mutation($input: CreateCustomerInput!) "
            "{ createCustomer(input: $input) { success customer { id name } } }",
            {"input": {"name": name}},
        ),
        (
            'mutation { createCustomer(input: {name: "Duka la \\ud83d\\ude00 Mama"}) '
            "{ success customer { id name } } }",
            None,
        ),
    ):
        result = world.clients["admin"].execute(query, variables)["createCustomer"]

        assert result["success"] is True
        assert result["customer"]["name"] == name
        assert session.get_one(Customer, uuid.UUID(result["customer"]["id"])).name == name


def test_a_lone_surrogate_in_the_operation_name_or_a_variable_name_is_refused(world, session):
    before = database_state(session)
    client = world.clients["jane"]
    headers = {"Authorization": f"Bearer {client.token}"}

    for body, field in (
        ({"query": "query Me { me { id } }", "operationName": "M\ud800"}, "operationName"),
        ({"query": "{ me { id } }", "variables": {"\ud800": 1}}, None),
    ):
        response = client.client.post(
            "/graphql", data=json.dumps(body), content_type="application/json", headers=headers
        )

        assert response.status_code == 400
        [error] = assert_structured(response)["errors"]
        assert error["extensions"] == {
            "code": "BAD_USER_INPUT",
            "field": field,
            "reason": "INVALID",
        }
        assert "(U+D800)" in error["message"]
    assert database_state(session) == before


def test_a_lone_surrogate_deep_inside_a_variable_is_found(world, session):
    before = database_state(session)
    query = "mutation($input: CreateOrderInput!) { createOrder(input: $input) { success } }"

    response = world.clients["jane"].post(
        query, {"input": {"unitPrice": "1", "extra": [{"a": "x"}, {"b": "\udbff"}], "\udc01": 1}}
    )

    assert response.status_code == 400
    errors = assert_structured(response)["errors"]
    assert [error["extensions"]["field"] for error in errors] == ["input", "input.extra[1].b"]
    assert "a field name holds a lone UTF-16 surrogate (U+DC01)" in errors[0]["message"]
    assert database_state(session) == before


# --- NUL, very long and non-BMP text in every text argument ---------------------------------

OTHER_TEXT = {
    "a NUL": "TAKEN1\x00",
    "10,000 characters": "x" * 10_000,
    "non-BMP characters": "\U0001f600\U00010348",
    "a right-to-left override": "\u202eKES",
    "SQL": "'; DROP TABLE orders; --",
}


@pytest.mark.parametrize("operation", TEXT_OPERATIONS, ids=str)
def test_other_awkward_text_is_answered_clearly_and_a_refusal_writes_nothing(
    world, session, operation
):
    # Each value once as a variable and once as a literal, by each caller in turn.
    for slot, (index, value) in product(slots_of(operation), enumerate(OTHER_TEXT.values())):
        arguments = resolve(arguments_with(slot, value), world.refs)
        for caller, as_variables in (("admin", frozenset(arguments)), ("jane", frozenset())):
            before = database_state(session)
            query, variables = document(slot.operation, arguments, as_variables=as_variables)

            body = assert_structured(world.clients[caller].post(query, variables))

            if not succeeded(body):
                assert database_state(session) == before, (str(slot), caller, index, body)


# --- the domain functions refuse text PostgreSQL cannot hold, whoever calls them -------------

ADMIN = Actor(subject=ADMIN_SUB, roles=frozenset({"admin"}), customer_id=None, is_admin=True)


@pytest.mark.parametrize(
    ("operation", "fields", "field"),
    [
        (create_customer, {"name": "Shop \ud800"}, "name"),
        (create_customer, {"name": "Shop", "code": "C\udfff"}, "code"),
        (create_customer, {"name": "Shop", "email": "a\ud800@example.com"}, "email"),
        (create_customer, {"name": "Shop", "phone": "+254712\ud800345678"}, "phone"),
        (create_order, {"unit_price": "1", "company": "Acme", "item": "\ud800"}, "item"),
        (create_order, {"unit_price": "1", "company": "Acme", "details": "\udfff"}, "orderDetails"),
        (
            create_order,
            {"unit_price": "1", "company": "Acme", "idempotency_key": "k\ud800"},
            "idempotencyKey",
        ),
        (
            create_order,
            {"unit_price": "1", "company": "Acme", "idempotency_key": "k\x00"},
            "idempotencyKey",
        ),
        (
            create_order,
            {"unit_price": "1", "company": "Acme", "customer_code": "\ud800"},
            "customerCode",
        ),
        (create_order, {"unit_price": "1", "company": "Acme", "user_id": "\ud800"}, "userId"),
        (create_order, {"unit_price": "1", "company": "Acme", "currency": "K\ud800S"}, "currency"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_domain_functions_refuse_text_that_is_not_storable(session, operation, fields, field):
    taken = CustomerFactory()
    actor = replace(ADMIN, customer_id=taken.id)
    before = database_state(session)

    with pytest.raises(DomainError) as refused:
        operation(session, actor=actor, **fields)

    assert field in [error.field for error in refused.value.errors]
    assert all(
        error.code in (ErrorCode.INVALID, ErrorCode.NOT_FOUND) for error in refused.value.errors
    )
    assert database_state(session) == before


def test_update_and_cancel_refuse_text_that_is_not_storable(session):
    order = OrderFactory()
    actor = replace(ADMIN, customer_id=order.customer_id)

    with pytest.raises(DomainError) as name:
        update_customer(session, actor=actor, customer_id=order.customer_id, name="\ud800")
    with pytest.raises(DomainError) as reason:
        cancel_order(session, actor=actor, order_id=order.id, reason="late \udfff", company="Acme")

    assert [(e.field, e.code) for e in name.value.errors] == [("name", ErrorCode.INVALID)]
    assert [(e.field, e.code) for e in reason.value.errors] == [("reason", ErrorCode.INVALID)]


# --- tokens whose claims are not text ---------------------------------------------------------


@pytest.mark.parametrize("subject", ["\ud800", "jane\x00", "a\udfff"])
def test_a_token_whose_subject_is_not_text_is_refused(attack_app, session, idp, subject):
    before = database_state(session)
    client = GraphQLClient(attack_app.test_client(), idp.issue_access_token("jane", sub=subject))

    response = client.post("{ me { id } }")

    assert response.status_code == 401
    [error] = assert_structured(response)["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert database_state(session) == before


def test_claims_that_are_not_text_are_neither_stored_nor_shown(attack_app, session, idp):
    token = idp.issue_access_token(
        "jane", name="\ud800", email="j\udfff@example.com", preferred_username="\ud800"
    )
    client = GraphQLClient(attack_app.test_client(), token)

    data = client.execute("{ me { id name email } userInfo { userId fullName email username } }")

    assert data["me"] == {"id": JANE_SUB, "name": "Customer", "email": None}
    assert data["userInfo"] == {
        "userId": JANE_SUB,
        "fullName": None,
        "email": None,
        "username": None,
    }


# --- numbers, nesting and JSON that is not quite JSON --------------------------------------------


def raw_post(world: World, body: str, caller: str = "jane"):
    headers = {"Authorization": f"Bearer {world.clients[caller].token}"}
    return world.clients[caller].client.post(
        "/graphql", data=body, content_type="application/json", headers=headers
    )


FIRST = '{"query": "query($f: Int) { allOrders(first: $f) { id } }", '


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (FIRST + '"variables": {"f": NaN}}', "The request body is not valid JSON."),
        (FIRST + '"variables": {"f": -Infinity}}', "The request body is not valid JSON."),
        (
            '{"query": "{ me { id } }", "variables": {"a": ' + "[" * 20_000 + "]" * 20_000 + "}}",
            "The request body is nested too deeply.",
        ),
        (
            '{"query": "{ me { id } }", "x": ' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}",
            "The request body is nested too deeply.",
        ),
    ],
    ids=["NaN", "-Infinity", "20,000 nested lists", "10,000 nested objects"],
)
def test_json_that_python_reads_but_no_client_should_send_is_a_bad_request(
    world, session, body, message
):
    before = database_state(session)

    response = raw_post(world, body)

    assert response.status_code == 400
    [error] = assert_structured(response)["errors"]
    assert error == {"message": message, "extensions": {"code": "BAD_REQUEST"}}
    assert database_state(session) == before


def test_a_number_beyond_a_double_is_refused_naming_the_variable(world, session):
    before = database_state(session)
    query = "mutation($input: CreateOrderInput!) { createOrder(input: $input) { success } }"

    for body, field in (
        (
            json.dumps({"query": "query($f: Int) { allOrders(first: $f) { id } }"})[:-1]
            + ', "variables": {"f": 1e400}}',
            "f",
        ),
        (
            json.dumps({"query": query})[:-1] + ', "variables": {"input": {"price": -1e999}}}',
            "input.price",
        ),
    ):
        response = raw_post(world, body)

        assert response.status_code == 400
        [error] = assert_structured(response)["errors"]
        assert error["extensions"]["field"] == field
        assert "beyond the range of a double" in error["message"]
    assert database_state(session) == before


@pytest.mark.parametrize(
    "query",
    [
        "{ allOrders(after: " + "[" * 390 + "]" * 390 + ") { id } }",
        "{ allOrders(after: " + "[" * 790 + ") { id } }",
        "{ allOrders(after: " + "{a: " * 190 + "1" + "}" * 190 + ") { id } }",
        "{ me " + "{ orders { nodes " * 120 + "{ id }" + " } }" * 120 + " }",
        "query($a: " + "[" * 390 + "String" + "]" * 390 + ") { me { id } }",
    ],
    ids=[
        "390 nested lists",
        "790 open brackets",
        "190 nested objects",
        "240 nested fields",
        "a variable type 390 lists deep",
    ],
)
def test_a_document_nested_too_deeply_to_parse_is_a_bad_request(world, session, query):
    before = database_state(session)

    response = world.clients["admin"].post(query)

    assert response.status_code == 400
    [error] = assert_structured(response)["errors"]
    assert error == {
        "message": "The document nests brackets more than 28 deep.",
        "extensions": {"code": "QUERY_TOO_DEEP"},
    }
    assert database_state(session) == before
    # And the service goes on: the same caller's next request is served.
    assert world.clients["admin"].execute("{ me { id } }")["me"]["id"] == ADMIN_SUB


# --- the property: nothing any operation is fed reaches a 500 -------------------------------

SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "a\ud800b", "\ud83d"]
AWKWARD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\n",
    "\U0001f600" * 3,
    "\u202e",
    "\ufeff",
    "٣",
    "NEW\x00",
    "'; DROP TABLE orders; --",
    "{",
    "\\",
    "null",
    "0",
    "-1",
    "1e400",
    "NaN",
    "Infinity",
    "00000000-0000-0000-0000-00000000000G",
    str(uuid.UUID(int=1)),
]
AWKWARD_NUMBERS = [
    0,
    -1,
    2**31,
    -(2**31) - 1,
    2**53 + 1,
    2**63,
    10**40,
    -(10**40),
    1.5,
    -0.0,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
]
AWKWARD_OTHER = [None, True, False, [], {}, [None], {"a": 1}, [[["deep"]]]]
json_leaves = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=8)
)
json_values = (
    json_leaves
    | st.lists(json_leaves, max_size=3)
    | st.dictionaries(st.text(max_size=4), json_leaves, max_size=3)
    | st.lists(st.lists(json_leaves, max_size=2), max_size=2)
)
# Large values are made by a function, not listed: a strategy that holds them has a repr too
# large for hypothesis to print.
cursors = (
    st.sampled_from(sorted(ODD_CURSORS)).map(ODD_CURSORS.__getitem__)
    | json_values.map(lambda value: b64(json.dumps(value).encode()))
    | st.integers(1, 3000).map(lambda depth: b64(b"[" * depth + b"]" * depth))
)
# Any character, surrogates (Cs) and controls (Cc) included.
any_text = st.text(st.characters(categories=["L", "M", "N", "P", "S", "Z", "C"]), max_size=24)
awkward = (
    st.sampled_from(SURROGATES + AWKWARD_TEXT + AWKWARD_NUMBERS + AWKWARD_OTHER)
    | st.integers(1000, 20_000).map(lambda length: "x" * length)
    | any_text
    | st.integers(-(10**30), 10**30)
    | cursors
    | json_values
)
# Examples per operation: enough to draw every kind of value for every argument, few enough
# that the whole property (every operation) runs in seconds.
EXAMPLES = 20
PLAUSIBLE: dict[str, list[Any]] = {
    "ID": [Ref("order"), Ref("other_order"), Ref("jane"), Ref("customer"), Ref("notification")],
    "String": [
        "TAKEN1",
        "new",
        "confirmed",
        "Wanjiru Stores",
        "+254712345678",
        "KES",
        "shop@example.com",
        "jane",
        Ref("cursor"),
        Ref("sub"),
        "key-1",
    ],
    "Int": [1, 5, 100],
    "Float": [1.0],
    "Boolean": [True],
    "Decimal": ["100.00", 1200.0, 7],
    "DateTime": ["2026-01-01T00:00:00+00:00"],
}


def values_for(type_: GraphQLInputType) -> st.SearchStrategy[Any]:
    """Values for an input of this type: plausible ones, and every awkward kind."""
    inner = unwrap(type_)
    if isinstance(inner, GraphQLList):
        return st.lists(values_for(inner.of_type), max_size=3) | awkward
    if isinstance(inner, GraphQLInputObjectType):
        required = {
            n: values_for(f.type) for n, f in inner.fields.items() if is_non_null_type(f.type)
        }
        optional = {n: values_for(f.type) for n, f in inner.fields.items() if n not in required}
        objects = st.fixed_dictionaries(required, optional=optional)
        return objects | objects.map(lambda value: {**value, "unknownField": "x"}) | awkward
    if isinstance(inner, GraphQLEnumType):
        return st.sampled_from([EnumName(name) for name in inner.values]) | awkward
    return st.sampled_from(PLAUSIBLE[inner.name]) | awkward


def calls(operation: Operation) -> st.SearchStrategy[tuple[dict[str, Any], frozenset[str]]]:
    """Arguments for one call (required ones always given, if perhaps as null), and which of
    them go as variables."""
    args = operation.field.args
    required = {n: values_for(a.type) for n, a in args.items() if is_non_null_type(a.type)}
    optional = {n: values_for(a.type) for n, a in args.items() if n not in required}

    def with_modes(given: dict[str, Any]) -> st.SearchStrategy[tuple[dict, frozenset[str]]]:
        modes = st.sets(st.sampled_from(sorted(given))) if given else st.just(set())
        return st.tuples(st.just(given), modes.map(frozenset))

    return st.fixed_dictionaries(required, optional=optional).flatmap(with_modes)


@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
def test_no_value_for_any_argument_of_any_operation_reaches_a_500(world, session, operation):
    """Each example is one request; a refused one must leave every table as it was (which
    also shows the database still answers). Deterministic: the same examples on every run."""

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None)
    @given(data=st.data())
    def attack(data: st.DataObject) -> None:
        caller = data.draw(st.sampled_from(["admin", "jane"]), label="caller")
        arguments, as_variables = data.draw(calls(operation), label="arguments")
        ascii_only = data.draw(st.booleans(), label="ascii_only")
        query, variables = document(
            operation,
            resolve(arguments, world.refs),
            as_variables=as_variables,
            ascii_only=ascii_only,
        )
        before = database_state(session)

        body = assert_structured(world.clients[caller].post(query, variables))

        if not succeeded(body):
            assert database_state(session) == before, body

    attack()
    # And afterwards the service serves both callers as before.
    for caller, subject in (("admin", ADMIN_SUB), ("jane", JANE_SUB)):
        assert world.clients[caller].execute("{ me { id } }") == {"me": {"id": subject}}
