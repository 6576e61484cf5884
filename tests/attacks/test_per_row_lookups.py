"""Attack: a cheap-looking document that makes the database work once per row.

`allOrders(first: 100) { customer { id } }` reads 100 orders and then looks up each one's
customer: 101 round trips. Sixteen aliases of it cost 4,800 when each field cost 1, within
the limit of 5,000, and took seconds. The fields whose resolver asks the database each time
it runs now cost more (web/document_limits.py: DATABASE_FIELDS and every root field), so
such a document is refused before anything runs. Those read per row are read a list at a time
(web/resolvers/batches.py), all but a customer's orders: the statements each field really
sends are counted here, so neither can drift from the resolvers. A customer's orders, a
query per customer, cost four times as much again (PER_ROW_QUERY_WEIGHT): 100 customers'
first order each, with its notifications and events, cost 4,910 and took 289 ms.

Production mode, an admin (who sees every order), real PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from ariadne import ObjectType
from graphql import GraphQLObjectType, get_named_type, is_leaf_type
from sqlalchemy import event

from models.actors import Actor
from models.notifications import Notification, NotificationAttempt
from models.placing import create_order
from tests.clients import GraphQLClient
from tests.docs_support import DOCS, code_blocks, section
from tests.factories import ADMIN_SUB, CustomerFactory, row_counts
from web.document_limits import DATABASE_FIELDS, PER_ROW_QUERIES
from web.graphql import build_schema
from web.resolvers import bindables

SCHEMA = build_schema()
ADMIN = Actor(subject=ADMIN_SUB, roles=frozenset({"admin"}), is_admin=True)
HOSTILE = (
    "{ "
    + " ".join(f"a{i}: allOrders(first: 100) {{ customer {{ id }} }}" for i in range(16))
    + " }"
)


@pytest.fixture
def admin(production_app, session, idp) -> GraphQLClient:
    client = GraphQLClient(production_app.test_client(), idp.issue_access_token("admin"))
    client.execute("{ me { id } }")  # provisioned, so a refused request is seen to write nothing
    return client


@pytest.fixture
def orders(session) -> list[uuid.UUID]:
    """Three orders, each of a customer of its own, each with its event, its notification
    and one attempt at the gateway."""
    ids = []
    for _ in range(3):
        customer = CustomerFactory()
        order = create_order(
            session, actor=ADMIN, customer_id=str(customer.id), unit_price="100", company="Acme"
        ).order
        for notification in session.query(Notification).filter_by(order_id=order.id):
            session.add(
                NotificationAttempt(
                    notification_id=notification.id, started_at=datetime.now(UTC), phone=None
                )
            )
        ids.append(order.id)
    session.commit()
    return ids


@pytest.fixture
def statements(session) -> Iterator[list[str]]:
    """Every SQL statement sent while the test runs."""
    sent: list[str] = []
    engine = session.get_bind().engine

    def count(_connection, _cursor, statement, *_args) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    yield sent
    event.remove(engine, "before_cursor_execute", count)


def test_aliases_of_a_lookup_per_row_are_refused_as_too_costly(admin, orders, session):
    before = row_counts(session)

    response = admin.post(HOSTILE)

    assert response.status_code == 400, response.get_data(as_text=True)
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    # Each alias: allOrders 10 + 100 rows x (1 + customer (10 + 1 x (1 + id))) = 1,310.
    assert error["extensions"]["cost"] == {"requestedQueryCost": 20960, "maximumAvailable": 5000}
    assert row_counts(session) == before


def test_as_many_aliases_as_fit_the_limit_are_served(admin, orders):
    three = "{ " + " ".join(
        f"a{i}: allOrders(first: 100) {{ customer {{ id }} }}" for i in range(3)
    )

    data = admin.execute(three + " }")  # 3,930

    assert len({order["customer"]["id"] for order in data["a2"]}) == len(orders)


# Where each type the resolvers serve is reached from a list of `%d` rows, and where one of
# its fields goes (`%s`).
REACH = {
    "Customer": "{ customers(first: %d) { nodes { %s } } }",
    "Order": "{ orders(first: %d) { nodes { %s } } }",
    "OrderConnection": "{ customers(first: %d) { nodes { orders { %s } } } }",
    "Money": "{ orders(first: %d) { nodes { total { %s } } } }",
    "OrderEvent": "{ orders(first: %d) { nodes { events { %s } } } }",
    "Notification": "{ notifications(first: %d) { nodes { %s } } }",
    "NotificationAttempt": "{ notifications(first: %d) { nodes { history { %s } } } }",
}


def test_every_type_with_resolvers_of_its_own_is_looked_at_below():
    served = {
        bindable.name
        for bindable in bindables
        if isinstance(bindable, ObjectType) and bindable.name not in ("Query", "Mutation")
    }

    assert served <= REACH.keys()


def selection_of(type_name: str, field_name: str) -> str:
    field = SCHEMA.type_map[type_name].fields[field_name]
    return (
        field_name if is_leaf_type(get_named_type(field.type)) else f"{field_name} {{ __typename }}"
    )


def test_only_a_customers_orders_ask_the_database_per_row_and_the_cost_weighs_them(
    admin, orders, statements
):
    def sent(type_name: str, selection: str, rows: int) -> int:
        statements.clear()
        admin.execute(REACH[type_name] % (rows, selection))
        return len(statements)

    asking = set()
    for type_name in REACH:
        kind = SCHEMA.type_map[type_name]
        assert isinstance(kind, GraphQLObjectType)
        for field_name in kind.fields:
            # What the field adds to the same document without it, for one row and three.
            one, three = (
                sent(type_name, selection_of(type_name, field_name), rows)
                - sent(type_name, "__typename", rows)
                for rows in (1, 3)
            )
            if three > one:
                asking.add((type_name, field_name))

    # Each order's customer, events and notifications, each notification's attempts: one
    # round trip for the whole list. A customer's orders are a page of their own, per row.
    assert asking == {("Customer", "orders")}
    assert asking == PER_ROW_QUERIES
    assert asking <= DATABASE_FIELDS


@pytest.mark.parametrize(
    ("document", "cost"),
    [
        # customers 10 + 100 x (1 + nodes 1 + orders (40 + 1 x (1 + nodes (1 +
        # notifications (10 + 1 + history 12) + events 12)))) = 7,910.
        (
            "{ customers(first: 100) { nodes { orders(first: 1) { nodes {"
            " notifications { history { outcome } } events { type } } } } } }",
            7910,
        ),
        # Each alias: 10 + 100 x (1 + 1 + 40 + 1 x (1 + 1 + 1)) = 4,510.
        (
            "{ "
            + " ".join(
                f"a{i}: customers(first: 100) {{ nodes {{ orders(first: 1) {{ nodes {{ id }} }}"
                " } }"
                for i in range(3)
            )
            + " }",
            13530,
        ),
    ],
    ids=["nested-lists", "aliases"],
)
def test_a_query_per_customer_for_many_customers_is_refused(admin, orders, session, document, cost):
    before = row_counts(session)

    response = admin.post(document)

    assert response.status_code == 400, response.get_data(as_text=True)
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert error["extensions"]["cost"] == {"requestedQueryCost": cost, "maximumAvailable": 5000}
    assert row_counts(session) == before


def test_a_few_customers_with_their_latest_orders_are_served(admin, orders):
    data = admin.execute(
        "{ customers(first: 20) { nodes { orders(first: 5) { nodes { id } } } } }"
    )  # 10 + 20 x (1 + 1 + 40 + 5 x (1 + 1 + 1)) = 1,150

    served = {o["id"] for c in data["customers"]["nodes"] for o in c["orders"]["nodes"]}
    assert {str(order) for order in orders} <= served


def test_the_runbooks_documents_fit_the_cost_limit(admin, orders):
    [block] = code_blocks(section(DOCS / "operations.md", "## Runbook"), "graphql")
    documents = [line for line in block.splitlines() if line.strip()]
    assert len(documents) == 3

    for document in documents:
        data = admin.execute(document.replace("<order id>", str(orders[0])))

        assert data
