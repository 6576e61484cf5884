"""Attack: what a stranger learns from, or costs through, the metrics.

In production the API's /metrics answers only the METRICS_TOKEN bearer (or is off, like any
unknown path), its labels stay bounded whatever clients send, and a scrape cannot hold the
database.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.clients import GraphQLClient
from web.graphql import build_schema
from web.metrics import INTROSPECTION, SEVERAL, UNKNOWN, UNPARSED, serve_worker_metrics

# `app` migrates the test database, which the production apps made here share.
pytestmark = pytest.mark.usefixtures("app")

METRICS_TOKEN = secrets.token_urlsafe(32)
SECRET_KEY = secrets.token_urlsafe(48)


def production(make_app, **overrides: Any):
    return make_app(env="production", secret_key=SECRET_KEY, **overrides)


def labels_of(text: str, metric: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in text_string_to_metric_families(text)
        if family.name == metric
        for sample in family.samples
        if label in sample.labels
    }


# -- the API's /metrics ----------------------------------------------------------------------


def test_without_a_token_production_has_no_metrics_at_all(make_app):
    http = production(make_app).test_client()

    for method in ("get", "post", "put"):
        metrics = getattr(http, method)("/metrics", headers={"Authorization": "Bearer x"})
        unknown = getattr(http, method)("/no-such-path")
        assert (metrics.status_code, metrics.get_json()) == (404, unknown.get_json())
        assert "Allow" not in metrics.headers


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {METRICS_TOKEN[:-1]}",
        f"Bearer {METRICS_TOKEN}x",
        f"Bearer {METRICS_TOKEN.upper()}",
        f"Token {METRICS_TOKEN}",
        "Basic " + base64.b64encode(f"prometheus:{METRICS_TOKEN}".encode()).decode(),
        METRICS_TOKEN,
    ],
)
def test_metrics_refuse_anything_but_the_bearer_token(make_app, authorization):
    http = production(make_app, metrics_token=METRICS_TOKEN).test_client()
    headers = {"Authorization": authorization} if authorization is not None else {}

    response = http.get("/metrics", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response.get_json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "graphql_requests_total" not in response.get_data(as_text=True)


def test_the_bearer_token_gets_the_metrics(make_app):
    http = production(make_app, metrics_token=METRICS_TOKEN).test_client()

    response = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"graphql_requests", "sms_outbox_backlog", "sms_notifications"} <= names


def test_development_metrics_stay_open(app):
    assert app.test_client().get("/metrics").status_code == 200


def test_clients_cannot_grow_the_label_set(make_app, idp, committed):
    """Hundreds of made-up operation names and fields first, then a real client: its
    requests still count under their own label, and no label is a client's invention."""
    app = production(make_app, metrics_token=METRICS_TOKEN)
    client = GraphQLClient(app.test_client(), idp.issue_access_token("jane"))
    made_up = [f"Attack{uuid.uuid4().hex}" for _ in range(300)]
    for name in made_up[:150]:
        client.post(f"query {name} {{ me {{ id }} }}")
    for name in made_up[150:]:
        client.post(f"{{ {name.lower()} }}")
        client.post(f"query A {{ me {{ id }} }} query {name} {{ me {{ id }} }}")
    client.post("{ me { id } myOrders { id } }")  # several root fields
    client.post("{ me { id ")  # a syntax error
    client.post("{ __typename }")

    client.execute("mutation Place { createOrder(input: {price: 10}) { success } }")
    client.execute("query Mine { ...Orders } fragment Orders on Query { myOrders { id } }")

    scrape = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    operations = labels_of(scrape.text, "graphql_requests", "operation")
    schema = build_schema()
    root_fields = {*schema.query_type.fields, *schema.mutation_type.fields}
    assert operations <= root_fields | {UNPARSED, UNKNOWN, SEVERAL, INTROSPECTION}
    assert {"createOrder", "myOrders", "me", UNKNOWN, SEVERAL, UNPARSED} <= operations
    assert not any(name in scrape.text or name.lower() in scrape.text for name in made_up)
    assert labels_of(scrape.text, "graphql_requests", "outcome") <= {
        "ok",
        "bad_request",
        "unauthenticated",
        "error",
    }


def test_a_scrape_cannot_hold_the_database(make_app, database_url):
    """A scrape whose reading cannot finish (here: the table locked) gives up after its
    statement timeout instead of holding a connection and a thread; the next one answers."""
    app = production(make_app, metrics_token=METRICS_TOKEN)
    http = app.test_client()
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        stuck = http.get("/metrics", headers=headers)
        with psycopg.connect(dsn, autocommit=True) as observer:
            waiting = observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'order-service-web' AND wait_event_type = 'Lock'"
            ).fetchone()[0]
        locker.rollback()

    assert stuck.status_code == 503
    assert stuck.get_json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert waiting == 0
    assert http.get("/metrics", headers=headers).status_code == 200


def test_the_worker_metrics_port_follows_the_same_rule(settings):
    prod = replace(settings, env="production", secret_key=SECRET_KEY)
    assert serve_worker_metrics(prod, 0, host="127.0.0.1") is None  # no token: off

    server = serve_worker_metrics(replace(prod, metrics_token=METRICS_TOKEN), 0, "127.0.0.1")
    assert server is not None
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        anonymous = requests.get(url, timeout=5)
        wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
        right = requests.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
    finally:
        server.shutdown()
        server.server_close()

    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert "sms_attempts_total" not in anonymous.text + wrong.text
    assert right.status_code == 200
    assert "sms_attempts_total" in right.text
