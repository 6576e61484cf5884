"""The benchmark's database work: a fresh database, and bulk data written straight with SQL.

Bulk rows go in with `INSERT ... SELECT generate_series(...)`, one statement per table, so a
million orders take seconds. They are shaped like the service's own rows (see
migrations/versions); customers themselves are always created through the API.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from models.validation import MAX_DETAILS

Connection = psycopg.Connection[Any]


def normalise_url(url: str) -> str:
    """A libpq URL (postgresql://) for a DATABASE_URL of any accepted spelling."""
    scheme, _, rest = url.partition("://")
    if scheme in ("postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        scheme = "postgresql"
    return f"{scheme}://{rest}"


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    parts = urlsplit(normalise_url(url))
    return urlunsplit(parts._replace(path=f"/{name}"))


def connect(url: str) -> Connection:
    return psycopg.connect(normalise_url(url), autocommit=True, connect_timeout=5)


def recreate_database(server_url: str, name: str) -> str:
    """Drop database `name` if a killed run left it, create it empty; return its URL."""
    with connect(with_database(server_url, "postgres")) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it."""
    with connect(with_database(server_url, "postgres")) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def bulk_orders(
    connection: Connection,
    *,
    customer_id: uuid.UUID,
    subject: str,
    count: int,
    return_ids: bool = True,
) -> list[uuid.UUID]:
    """Insert `count` NEW orders for a customer, one second apart and older than any the API
    creates; return their ids (an empty list without `return_ids`, for the millions)."""
    statement = """
        INSERT INTO orders (id, customer_id, item, details, quantity, unit_price, total,
                            currency, status, created_by, created_at, updated_at)
        SELECT gen_random_uuid(), %(customer)s, 'bench item', 'bulk loaded', 1, 100.00, 100.00,
               'KES', 'NEW', %(subject)s, stamp, stamp
        FROM (SELECT now() - g * interval '1 second' AS stamp
              FROM generate_series(1, %(count)s) AS g) AS series
        """
    parameters = {"customer": customer_id, "subject": subject, "count": count}
    if not return_ids:
        connection.execute(statement, parameters)
        return []
    return [row[0] for row in connection.execute(statement + " RETURNING id", parameters)]


def customers_with_an_order(connection: Connection, *, count: int) -> None:
    """`count` customers with one NEW order each, for documents that look up each order's
    customer; each order's details as long as they may be (2,000 emoji, 8 KB)."""
    connection.execute(
        """
        WITH made AS (
            INSERT INTO customers (id, code, name)
            SELECT gen_random_uuid(), 'BENCHDOC' || g, 'Bench customer ' || g
            FROM generate_series(1, %(count)s) AS g
            RETURNING id
        )
        INSERT INTO orders (id, customer_id, item, details, quantity, unit_price, total,
                            currency, status, created_by)
        SELECT gen_random_uuid(), id, 'bench item', repeat(%(emoji)s, %(length)s), 1, 100.00,
               100.00, 'KES', 'NEW', 'bench'
        FROM made
        """,
        {"count": count, "emoji": "\U0001f600", "length": MAX_DETAILS},
    )


def queued_notifications(
    connection: Connection,
    *,
    customer_id: uuid.UUID,
    kind: str = "ORDER_PLACED",
    limit: int | None = None,
) -> list[uuid.UUID]:
    """One QUEUED notification of `kind` for each order of a customer (at most `limit`), each
    to a valid Kenyan mobile number of its own; return their ids."""
    rows = connection.execute(
        """
        INSERT INTO notifications (id, order_id, kind, phone, body, status, attempts)
        SELECT gen_random_uuid(), id, %(kind)s,
               '+254712' || lpad((row_number() OVER (ORDER BY id))::text, 6, '0'),
               'Donfiles: order ' || upper(left(replace(id::text, '-', ''), 8))
                   || ' for KES 100.00: bench message.',
               'QUEUED', 0
        FROM (SELECT id FROM orders WHERE customer_id = %(customer)s ORDER BY id
              LIMIT %(limit)s) AS chosen
        RETURNING id
        """,
        {"customer": customer_id, "kind": kind, "limit": limit},
    ).fetchall()
    return [row[0] for row in rows]


def drain_progress(connection: Connection, *, customer_id: uuid.UUID) -> dict[str, Any]:
    """How far the SMS of a customer's orders are: counts by status, the last sent_at."""
    row = connection.execute(
        """
        SELECT count(*) FILTER (WHERE n.status = 'SENT'),
               count(*) FILTER (WHERE n.status = 'FAILED'),
               count(*) FILTER (WHERE n.status IN ('QUEUED', 'SENDING')),
               extract(epoch FROM max(n.sent_at))
        FROM notifications n JOIN orders o ON o.id = n.order_id
        WHERE o.customer_id = %(customer)s
        """,
        {"customer": customer_id},
    ).fetchone()
    assert row is not None
    return {
        "sent": row[0],
        "failed": row[1],
        "pending": row[2],
        "last_sent_at": float(row[3]) if row[3] is not None else None,
    }


def pending_notifications(connection: Connection) -> int:
    """QUEUED or SENDING notifications of every customer."""
    row = connection.execute(
        "SELECT count(*) FROM notifications WHERE status IN ('QUEUED', 'SENDING')"
    ).fetchone()
    assert row is not None
    return int(row[0])


def pending_breakdown(connection: Connection) -> list[tuple[Any, ...]]:
    """Unfinished notifications by status and kind, with their attempts and due times."""
    return connection.execute(
        "SELECT status, kind, count(*), max(attempts), min(next_attempt_at), "
        "max(next_attempt_at) FROM notifications WHERE status IN ('QUEUED', 'SENDING') "
        "GROUP BY status, kind"
    ).fetchall()


def discard_pending(connection: Connection, reason: str) -> int:
    """Mark every QUEUED notification FAILED (a backlog no measurement wants); return how many."""
    result = connection.execute(
        "UPDATE notifications SET status = 'FAILED', last_error = %s, updated_at = "
        "clock_timestamp() WHERE status = 'QUEUED'",
        (reason,),
    )
    return result.rowcount


def settle(connection: Connection, table: str) -> None:
    """After a bulk load: what autovacuum would get to eventually (visibility map, planner
    statistics), then a CHECKPOINT, so writing the load out does not slow the next
    measurement."""
    connection.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        connection.execute("CHECKPOINT")


DB_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "sessions",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
)


def db_counters(url: str) -> dict[str, int]:
    """PostgreSQL's cumulative counters for the database of `url` (pg_stat_database): commits,
    sessions opened, rows fetched and written. Approximate: a busy server process publishes
    its counts at most once a second, an idle one within 10 s."""
    with connect(url) as connection:
        row = connection.execute(
            sql.SQL("SELECT {} FROM pg_stat_database WHERE datname = current_database()").format(
                sql.SQL(", ").join(map(sql.Identifier, DB_COUNTERS))
            )
        ).fetchone()
    assert row is not None
    return {name: int(value or 0) for name, value in zip(DB_COUNTERS, row, strict=True)}


def floor_rows(connection: Connection, key_prefix: str) -> int:
    """Rows of `bench_floor_orders` whose idempotency key starts with `key_prefix` (each floor's
    load has a prefix of its own)."""
    row = connection.execute(
        "SELECT count(*) FROM bench_floor_orders WHERE idempotency_key LIKE %s",
        (f"{key_prefix}%",),
    ).fetchone()
    assert row is not None
    return int(row[0])
