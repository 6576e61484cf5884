"""Automatic persisted queries as Apollo's clients use them, over this run's real Redis: a hash
the service does not know, then the hash with its document, then the hash alone (by POST or
GET); a hash that is not the document's; the document limits on persisted documents; and a
Redis that cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import REDIS_URL
from tests.factories import row_counts
from web.persisted_queries import KEY_PREFIX

JSON = "application/json"
MODERN = "application/graphql-response+json"
NOT_FOUND = [
    {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
]


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(digest: str, version: int = 1) -> dict:
    return {"persistedQuery": {"version": version, "sha256Hash": digest}}


@pytest.fixture
def store() -> Iterator[redis.Redis]:
    """This run's Redis; the persisted documents the test made are removed afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    leftovers = client.keys(f"{KEY_PREFIX}*")
    made = [key for key in leftovers if client.get(key) and b"# test " in client.get(key)]
    if made:
        client.delete(*made)
    client.close()


def document(body: str = "me { id }") -> str:
    """A document no other test sends: its hash is new to the store."""
    return f"# test {uuid.uuid4().hex}\nquery Mine {{ {body} }}"


@pytest.fixture
def jane(app, session, idp):
    """`jane(body)` posts `body` as jane; `jane(body, get=True)` sends it as a GET."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {idp.issue_access_token('jane')}"}

    def send(body: dict, *, get: bool = False, accept: str = MODERN):
        all_headers = {**headers, "Accept": accept}
        if get:
            args = {
                name: value if isinstance(value, str) else json.dumps(value)
                for name, value in body.items()
            }
            return client.get("/graphql", query_string=args, headers=all_headers)
        return client.post("/graphql", json=body, headers=all_headers)

    return send


def test_an_unknown_hash_asks_for_the_document_as_apollo_clients_expect(jane, store):
    digest = sha256(document())

    as_json = jane({"extensions": persisted(digest)}, accept=JSON)
    as_modern = jane({"extensions": persisted(digest)})

    # application/json (Apollo's clients send Accept: */*): 200, like any request error.
    assert as_json.status_code == 200
    assert as_json.get_json() == {"errors": NOT_FOUND}
    assert as_modern.status_code == 400
    assert as_modern.get_json() == {"errors": NOT_FOUND}


def test_a_document_sent_with_its_hash_is_kept_for_the_ttl_and_runs_by_hash_alone(
    jane, store, settings
):
    query = document()
    digest = sha256(query)

    first = jane({"query": query, "extensions": persisted(digest)})
    assert first.status_code == 200
    assert first.get_json()["data"]["me"]["id"]
    assert store.get(KEY_PREFIX + digest) == query.encode()
    assert 0 < store.ttl(KEY_PREFIX + digest) <= settings.persisted_query_ttl

    by_post = jane({"extensions": persisted(digest)})
    by_get = jane({"extensions": persisted(digest)}, get=True)

    assert by_post.get_json() == first.get_json()
    assert by_get.get_json() == first.get_json()
    assert by_get.headers["Cache-Control"] == "private, no-cache"


def test_variables_and_operation_name_go_with_a_hash(jane, store):
    query = document("myOrders(first: $first) { id }").replace("Mine", "Mine($first: Int)")
    digest = sha256(query)
    jane({"query": query, "variables": {"first": 1}, "extensions": persisted(digest)})

    response = jane(
        {"extensions": persisted(digest), "variables": {"first": 2}, "operationName": "Mine"},
        get=True,
    )

    assert response.get_json() == {"data": {"myOrders": []}}


def test_a_hash_that_is_not_the_documents_is_refused_and_runs_nothing(jane, store, session):
    jane({"query": "{ me { id } }"})  # jane's record, first seen
    before = row_counts(session)
    mutation = "mutation { createOrder(input: {price: 10.0}) { success } }"
    claimed = sha256(document())

    response = jane({"query": mutation, "extensions": persisted(claimed)}, accept=JSON)

    assert response.status_code == 400
    assert response.get_json() == {
        "errors": [
            {"message": "provided sha does not match query", "extensions": {"code": "BAD_REQUEST"}}
        ]
    }
    assert store.get(KEY_PREFIX + claimed) is None
    assert store.get(KEY_PREFIX + sha256(mutation)) is None
    assert row_counts(session) == before


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        ({"version": 2, "sha256Hash": "0" * 64}, "Unsupported persisted query version"),
        ({"version": True, "sha256Hash": "0" * 64}, "Unsupported persisted query version"),
        ({"version": 1, "sha256Hash": "abc"}, "sha256Hash must be a SHA-256 in hex"),
        ({"version": 1}, "sha256Hash must be a SHA-256 in hex"),
        ("yes", "extensions.persistedQuery must be an object"),
    ],
)
def test_a_persisted_query_extension_the_service_cannot_read_is_400(jane, extension, message):
    response = jane({"extensions": {"persistedQuery": extension}}, accept=JSON)

    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert message in error["message"]
    assert error["extensions"]["code"] == "BAD_REQUEST"


def test_a_document_that_does_not_validate_is_not_kept(jane, store):
    query = document("nope")
    digest = sha256(query)

    response = jane({"query": query, "extensions": persisted(digest)})

    assert response.status_code == 400
    assert store.get(KEY_PREFIX + digest) is None


def test_a_strangers_document_runs_but_is_not_kept(app, session, store):
    # Strangers must not fill the Redis that Celery's queue lives in.
    query = document("__typename")
    digest = sha256(query)

    response = app.test_client().post(
        "/graphql", json={"query": query, "extensions": persisted(digest)}
    )

    assert response.get_json() == {"data": {"__typename": "Query"}}
    assert store.get(KEY_PREFIX + digest) is None


def test_one_caller_keeps_at_most_its_limit_of_documents_and_the_rest_still_run(
    make_app, session, idp, store
):
    """A signed-in caller padding documents to 16 KiB must not fill the Redis that Celery and
    the rate limits share: past PERSISTED_QUERY_RATE_LIMIT nothing more of theirs is kept."""
    app = make_app(persisted_query_rate_limit="2 per hour")

    def send(who: str, query: str):
        headers = {"Authorization": f"Bearer {idp.issue_access_token(who)}"}
        body = {"query": query, "extensions": persisted(sha256(query))}
        return app.test_client().post("/graphql", json=body, headers=headers)

    queries = [document() for _ in range(3)]
    answers = [send("jane", query) for query in queries]

    assert [answer.get_json()["data"]["me"]["id"] is not None for answer in answers] == [True] * 3
    kept = [store.get(KEY_PREFIX + sha256(q)) is not None for q in queries]
    assert kept == [True, True, False]
    other = document()
    send("admin", other)
    assert store.get(KEY_PREFIX + sha256(other)) is not None  # another caller's own budget


def test_a_mutation_by_hash_over_get_is_405(jane, store):
    mutation = "# test get\nmutation { createOrder(input: {price: 10.0}) { success } }"
    store.set(KEY_PREFIX + sha256(mutation), mutation, ex=60)

    response = jane({"extensions": persisted(sha256(mutation))}, get=True)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# -- the document limits -----------------------------------------------------------------------


def test_the_cost_limit_judges_each_request_of_a_persisted_document(make_app, session, idp, store):
    limited = make_app(graphql_max_cost=50).test_client()
    headers = {"Authorization": f"Bearer {idp.issue_access_token('jane')}"}
    query = document("myOrders(first: $first) { id status }").replace("Mine", "Mine($first: Int)")
    digest = sha256(query)
    cheap = limited.post(
        "/graphql",
        json={"query": query, "variables": {"first": 2}, "extensions": persisted(digest)},
        headers=headers,
    )
    assert cheap.get_json() == {"data": {"myOrders": []}}

    costly = limited.post(
        "/graphql",
        json={"variables": {"first": 100}, "extensions": persisted(digest)},
        headers=headers,
    )

    assert costly.status_code == 400
    assert [error["extensions"]["code"] for error in costly.get_json()["errors"]] == [
        "QUERY_TOO_COSTLY"
    ]


def test_a_stored_document_past_a_limit_is_refused_by_hash(jane, store):
    # Kept while the limits were looser (or written by another version): checked again.
    deep = (
        "# test deep\n{ me { orders(first: 1) { nodes { customer { orders(first: 1) { nodes {"
        " customer { orders(first: 1) { nodes { customer { id } } } } } } } } } } }"
    )
    store.set(KEY_PREFIX + sha256(deep), deep, ex=60)

    response = jane({"extensions": persisted(sha256(deep))})

    assert response.status_code == 400
    assert [error["extensions"]["code"] for error in response.get_json()["errors"]] == [
        "QUERY_TOO_DEEP"
    ]


# -- Redis unreachable -------------------------------------------------------------------------


@pytest.fixture
def no_redis(make_app, session, idp):
    client = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    headers = {"Authorization": f"Bearer {idp.issue_access_token('jane')}", "Accept": JSON}
    return lambda body: client.post("/graphql", json=body, headers=headers)


def test_without_redis_every_hash_is_unknown_and_full_documents_are_served(no_redis):
    query = document()
    digest = sha256(query)

    by_hash = no_redis({"extensions": persisted(digest)})
    in_full = no_redis({"query": query, "extensions": persisted(digest)})
    again = no_redis({"extensions": persisted(digest)})

    assert (by_hash.status_code, by_hash.get_json()) == (200, {"errors": NOT_FOUND})
    assert in_full.status_code == 200
    assert in_full.get_json()["data"]["me"]["id"]
    assert again.get_json() == {"errors": NOT_FOUND}
