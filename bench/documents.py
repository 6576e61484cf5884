"""Hostile GraphQL documents: for each way a small document can make validation expensive,
the worst one that still fits the production limits (tokens, fields, depth, a 64 KiB body;
the defaults of `common.settings.Settings`), or just does not. The bench sends each without a
token and times the answer; those in `SIGNED_IN`, which make the database work rather than
validation, it sends as an admin who sees `ORDERS_OF_OTHERS` orders, each of a customer of
its own.

Each builder takes a `nonce`, put in a comment, so that every request is a document the
service has not seen (it keeps the outcome of recent documents).
"""

from __future__ import annotations

import functools
import json
import statistics
import uuid
from collections.abc import Callable
from typing import Any

from graphql import get_operation_ast, parse

from common.settings import Settings
from models.pagination import MAX_PAGE
from web.document_limits import cost, measure
from web.graphql import MAX_FRAGMENTS, MAX_MERGED_PAIRS, MAX_OPERATIONS, build_schema

# The production defaults: each document is as large as they allow.
LIMITS = Settings()
TOKENS = LIMITS.graphql_max_tokens
FIELDS = LIMITS.graphql_max_fields
# Orders, each of a customer of its own, that the signed-in documents find: a full page.
ORDERS_OF_OTHERS = MAX_PAGE


def _fits(per_item: int, overhead: int = 12) -> int:
    """How many items of `per_item` tokens fit the token limit beside `overhead` tokens."""
    return (TOKENS - overhead) // per_item


def _most_merged(levels: int) -> int:
    """The most selections of one field with `levels` levels of fields inside (counting
    itself) that stay within the limit on compared pairs."""
    copies = 2
    while levels * (copies + 1) * copies // 2 <= MAX_MERGED_PAIRS:
        copies += 1
    return copies


def fragment_fanout(nonce: str) -> str:
    """Each fragment spreads the next one twice: 2^n fields from 11 n tokens (refused)."""
    count = MAX_FRAGMENTS - 1
    fragments = " ".join(
        f"fragment F{i} on Customer {{ ...F{i + 1} ...F{i + 1} }}" for i in range(count)
    )
    return f"# {nonce}\n{{ me {{ ...F0 }} }} {fragments} fragment F{count} on Customer {{ id }}"


def fragment_chain(nonce: str) -> str:
    """The most fragments allowed, each spreading the next: one long path through spreads."""
    count = MAX_FRAGMENTS - 1
    fragments = " ".join(f"fragment F{i} on Customer {{ ...F{i + 1} }}" for i in range(count))
    return f"# {nonce}\n{{ me {{ ...F0 }} }} {fragments} fragment F{count} on Customer {{ id }}"


def fragment_pairs(nonce: str) -> str:
    """The most fragments allowed, spread side by side: field merging compares them pair by
    pair."""
    spreads = " ".join(f"...F{i}" for i in range(MAX_FRAGMENTS))
    fragments = " ".join(f"fragment F{i} on Customer {{ a{i}: id }}" for i in range(MAX_FRAGMENTS))
    return f"# {nonce}\n{{ me {{ {spreads} }} }} {fragments}"


def fragments_of_one_field(nonce: str) -> str:
    """Fragments that all select the same field, as many as the limit on pairs allows."""
    count = _most_merged(1)
    spreads = " ".join(f"...F{i}" for i in range(count))
    fragments = " ".join(f"fragment F{i} on Customer {{ id }}" for i in range(count))
    return f"# {nonce}\n{{ me {{ {spreads} }} }} {fragments}"


def same_alias(nonce: str) -> str:
    """One response name selected as often as allowed, with differing arguments (each pair
    conflicts)."""
    fields = " ".join(
        f"x: orders(first: {i + 1}) {{ nodes {{ id }} }}" for i in range(_most_merged(3))
    )
    return f"# {nonce}\n{{ me {{ {fields} }} }}"


def merged_everywhere(nonce: str) -> str:
    """One list selected as often as allowed, the same at every level: nothing conflicts."""
    fields = " ".join("x: orders(first: 1) { nodes { id } }" for _ in range(_most_merged(3)))
    return f"# {nonce}\n{{ me {{ {fields} }} }}"


def unknown_fields(nonce: str) -> str:
    """Fields that do not exist: each refused with suggestions computed (then dropped)."""
    fields = " ".join(f"odrer{i}" for i in range(FIELDS - 2))
    return f"# {nonce}\n{{ me {{ {fields} }} }}"


def many_operations(nonce: str) -> str:
    """As many named operations as fit (refused: each is walked again for its variables)."""
    return f"# {nonce}\n" + " ".join(f"query Q{i} {{ me {{ id }} }}" for i in range(_fits(8)))


def operations_sharing_fragments(nonce: str) -> str:
    """The most operations allowed, each spreading every fragment that then fits."""
    per_operation = 6  # `query Qn { me {` and `} }`
    count = (TOKENS - 12 - MAX_OPERATIONS * per_operation) // (2 * MAX_OPERATIONS + 9)
    spreads = " ".join(f"...F{i}" for i in range(count))
    operations = " ".join(f"query Q{i} {{ me {{ {spreads} }} }}" for i in range(MAX_OPERATIONS))
    defined = " ".join(f"fragment F{i} on Customer {{ a{i}: id }}" for i in range(count))
    return f"# {nonce}\n{operations} {defined}"


def many_variables(nonce: str) -> str:
    """As many variables as fit, each used."""
    count = _fits(7, overhead=20)
    variables = " ".join(f"$v{i}: Int" for i in range(count))
    uses = " ".join(f"a{i}: orders(first: $v{i}) {{ nodes {{ id }} }}" for i in range(3))
    unused = count - 3
    return f"# {nonce}\nquery({variables}) {{ me {{ {uses} }} }}" if unused >= 0 else ""


def long_list_argument(nonce: str) -> str:
    """A list literal as long as the token limit allows."""
    values = ", ".join(str(i) for i in range(_fits(1, overhead=16)))
    return f"# {nonce}\n{{ orders(status: [{values}]) {{ nodes {{ id }} }} }}"


def deep_brackets(nonce: str) -> str:
    """Brackets nested as deep as the token limit allows (the parser recurses on each)."""
    depth = _fits(2, overhead=14)
    return f"# {nonce}\n{{ orders(status: {'[' * depth}1{']' * depth}) {{ nodes {{ id }} }} }}"


def repeated_directives(nonce: str) -> str:
    """The same directive over and over on one field."""
    directives = " ".join("@include(if: true)" for _ in range(_fits(7)))
    return f"# {nonce}\n{{ me {{ id {directives} }} }}"


def long_string(nonce: str) -> str:
    """One string argument filling the body limit."""
    return f'# {nonce}\n{{ customerByCode(code: "{"x" * 60_000}") {{ id }} }}'


def _order_customers(aliases: int, nonce: str) -> str:
    orders = f"allOrders(first: {MAX_PAGE}) {{ customer {{ id }} }}"
    return f"# {nonce}\n{{ " + " ".join(f"a{i}: {orders}" for i in range(aliases)) + " }"


def lookups_per_row(nonce: str) -> str:
    """Sixteen lists of a full page of orders, each order's customer looked up: 1,616 round
    trips to the database from 16 fields (refused: each lookup costs as a round trip)."""
    return _order_customers(16, nonce)


@functools.cache
def _most_order_customers() -> int:
    """The most lists of `_order_customers` within the cost limit."""
    schema = build_schema()
    aliases = 0
    while True:
        document = parse(_order_customers(aliases + 1, ""))
        if (
            cost(schema, measure(document), get_operation_ast(document), {})
            > LIMITS.graphql_max_cost
        ):
            return aliases
        aliases += 1


def lookups_per_row_that_fit(nonce: str) -> str:
    """The same, with as many lists as the cost limit allows."""
    return _order_customers(_most_order_customers(), nonce)


def long_text_aliases(nonce: str) -> str:
    """48 aliases of `orderDetails` (8 KB each) over a full page of orders: 38 MB of answer
    from 4,910 at 1 a field (refused: a long text field costs by its bytes)."""
    fields = " ".join(f"a{i}: orderDetails" for i in range(48))
    return f"# {nonce}\n{{ allOrders(first: {MAX_PAGE}) {{ {fields} }} }}"


def long_text_page(nonce: str) -> str:
    """A full page of orders with their details, as a client would ask: served."""
    return f"# {nonce}\n{{ allOrders(first: {MAX_PAGE}) {{ id status orderDetails }} }}"


def customer_orders_per_row(nonce: str) -> str:
    """A page of customers, each one's latest order with its notifications and events: a
    query per customer (refused: a customer's orders are not read a list at a time)."""
    inner = "notifications { history { outcome } } events { type }"
    return (
        f"# {nonce}\n{{ customers(first: {MAX_PAGE}) {{ nodes {{ orders(first: 1) "
        f"{{ nodes {{ {inner} }} }} }} }} }}"
    )


SIGNED_IN = frozenset(
    {
        "lookups_per_row",
        "lookups_per_row_that_fit",
        "long_text_aliases",
        "long_text_page",
        "customer_orders_per_row",
    }
)

HOSTILE: dict[str, Callable[[str], str]] = {
    builder.__name__: builder
    for builder in (
        fragment_fanout,
        fragment_chain,
        fragment_pairs,
        fragments_of_one_field,
        same_alias,
        merged_everywhere,
        unknown_fields,
        many_operations,
        operations_sharing_fragments,
        many_variables,
        long_list_argument,
        deep_brackets,
        repeated_directives,
        long_string,
        lookups_per_row,
        lookups_per_row_that_fit,
        long_text_aliases,
        long_text_page,
        customer_orders_per_row,
    )
}


def time_hostile(post: Callable[[str, bool], tuple[int, float, int]], sends: int) -> dict[str, Any]:
    """Send each hostile document `sends` times, a new variant each time, through `post`
    (a JSON body and whether to send it signed in; the answer's HTTP status, the seconds it
    took and its size out). Per document: its size, the statuses seen, the median and
    slowest answer, the largest answer; and which was worst."""
    results: dict[str, Any] = {}
    for name, build in HOSTILE.items():
        statuses: set[int] = set()
        seconds: list[float] = []
        answer = 0
        for _ in range(sends):
            query = build(uuid.uuid4().hex)
            status, took, size = post(json.dumps({"query": query}), name in SIGNED_IN)
            statuses.add(status)
            seconds.append(took)
            answer = max(answer, size)
        results[name] = {
            "bytes": len(query),
            "statuses": sorted(statuses),
            "median_ms": round(statistics.median(seconds) * 1000, 2),
            "max_ms": round(max(seconds) * 1000, 2),
            "answer_bytes": answer,
        }
    worst = max(results, key=lambda name: results[name]["median_ms"])
    return {
        "sends_each": sends,
        "documents": results,
        "worst": worst,
        "worst_median_ms": results[worst]["median_ms"],
    }
