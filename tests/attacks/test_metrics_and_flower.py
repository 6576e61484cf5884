"""Attack: what a stranger learns from, or costs through, the metrics and Flower.

In production the API's /metrics answers only the METRICS_TOKEN bearer (or is off, like any
unknown path), its labels stay bounded whatever clients send, and a scrape cannot hold the
database. Flower, started as the Procfile starts it, answers nothing but /healthcheck without
its basic auth.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import serve_metrics
from tests.clients import GraphQLClient
from tests.conftest import CLIENT_SECRET, REDIS_URL, ROOT
from web.graphql import build_schema
from web.metrics import INTROSPECTION, SEVERAL, UNKNOWN, UNPARSED

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
    assert serve_metrics(prod, 0, host="127.0.0.1") is None  # no token: off

    server = serve_metrics(replace(prod, metrics_token=METRICS_TOKEN), 0, "127.0.0.1")
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


# -- Flower ----------------------------------------------------------------------------------

OPS = ("ops", secrets.token_urlsafe(18))
AUDIT = ("audit", secrets.token_urlsafe(18))
BANNER = re.compile(r"Visit me at http://127\.0\.0\.1:(\d+)")


def procfile_command(process: str) -> str:
    line = next(
        line
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{process}: ")
    )
    return line.split(": ", 1)[1]


class FlowerProcess:
    """The Procfile's `flower` line run by a shell, as honcho and Heroku run it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            ["sh", "-c", f"exec {procfile_command('flower')}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def url(self, timeout: float = 30.0) -> str:
        """Where it listens, once it says so; fails the test if it exits first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if match := BANNER.search(line):
                    return f"http://127.0.0.1:{match[1]}"
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Flower did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def exit_code(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=5)  # the pipe ends with the process
        if self.process.stdout is not None:
            self.process.stdout.close()


def flower_env(database_url: str, idp: Any, basic_auth: str | None) -> dict[str, str]:
    """A production environment for the `flower` process, on an ephemeral port."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FLOWER_", "APP_ENV", "FLASK_ENV", "AT_"))
    }
    env.update(
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        APP_ENV="production",
        SECRET_KEY=SECRET_KEY,
        DATABASE_URL=database_url,
        # The same Redis database: production refuses the development default's spelling.
        REDIS_URL=REDIS_URL.removesuffix("/0"),
        OIDC_ISSUER=idp.issuer,
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        AT_API_KEY=secrets.token_urlsafe(24),
        AT_CALLBACK_SECRET=secrets.token_urlsafe(24),
        FLOWER_ADDRESS="127.0.0.1",
        FLOWER_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    if basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = basic_auth
    return env


@pytest.fixture(scope="module")
def flower(database_url, idp) -> Iterator[str]:
    """Flower in production with two users, for the module; its base URL."""
    basic_auth = ",".join(f"{user}:{password}" for user, password in (OPS, AUDIT))
    process = FlowerProcess(flower_env(database_url, idp, basic_auth))
    try:
        yield process.url()
    finally:
        process.stop()


# Every kind of handler Flower has: pages, the JSON API, the task API, its metrics, static
# files, the login and logout pages, the catch-all 404.
GUARDED = [
    ("GET", "/"),
    ("GET", "/workers"),
    ("GET", "/tasks"),
    ("GET", "/tasks/datatable"),
    ("GET", "/broker"),
    ("GET", "/task/some-id"),
    ("GET", "/api/workers"),
    ("GET", "/api/tasks"),
    ("GET", "/api/task/types"),
    ("GET", "/api/queues/length"),
    ("POST", "/api/task/async-apply/notifications.sweep"),
    ("POST", "/api/worker/shutdown/worker@host"),
    ("GET", "/metrics"),
    ("GET", "/static/css/bootstrap.min.css"),
    ("GET", "/favicon.ico"),
    ("GET", "/login"),
    ("GET", "/logout"),
    ("GET", "/no-such-page"),
    ("OPTIONS", "/api/task/apply/notifications.sweep"),
    ("OPTIONS", "/metrics"),
    ("HEAD", "/metrics"),
    ("GET", "/healthcheck/"),
    ("GET", "/healthcheck/../metrics"),
]
WRONG = [
    None,
    ("admin", ""),
    (OPS[0], ""),
    ("", OPS[1]),
    (OPS[0], AUDIT[1]),
    (AUDIT[0], OPS[1]),
    (OPS[0], OPS[1] + "x"),
    (f"{OPS[0]}:{OPS[1]},{AUDIT[0]}", AUDIT[1]),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_flower_answers_nothing_without_its_credentials(flower, method, path):
    for credentials in WRONG:
        response = requests.request(
            method, flower + path, auth=credentials, timeout=10, allow_redirects=False
        )

        assert response.status_code == 401, (credentials, response.text[:200])
        assert response.headers["WWW-Authenticate"] == 'Basic realm="flower"'
        assert "celery" not in response.text.lower()
        assert "flower_" not in response.text


def test_flower_answers_a_bearer_or_garbage_authorization_with_401(flower):
    for header in ("Bearer x", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"ops").decode()):
        response = requests.get(f"{flower}/metrics", headers={"Authorization": header}, timeout=10)
        assert response.status_code == 401


def test_flower_health_check_needs_no_credentials(flower):
    response = requests.get(f"{flower}/healthcheck", timeout=10)

    assert (response.status_code, response.text) == (200, "OK")


@pytest.mark.parametrize("user", [OPS, AUDIT], ids=["first pair", "second pair"])
def test_each_configured_user_gets_in(flower, user):
    metrics = requests.get(f"{flower}/metrics", auth=user, timeout=10)
    task_types = requests.get(f"{flower}/api/task/types", auth=user, timeout=10)

    assert metrics.status_code == 200
    assert "flower_events_total" in metrics.text
    assert task_types.status_code == 200
    assert "task-types" in task_types.json()


@pytest.mark.parametrize(
    ("basic_auth", "named"),
    [
        (None, "FLOWER_BASIC_AUTH"),
        ("admin:", "FLOWER_BASIC_AUTH"),
        (f"{OPS[0]}:{OPS[1]},admin:", "FLOWER_BASIC_AUTH"),
        (f"{OPS[0]}:{OPS[1]},:{AUDIT[1]}", "FLOWER_BASIC_AUTH"),
        (f"{OPS[0]}:pass,word", "FLOWER_BASIC_AUTH"),
    ],
    ids=["unset", "empty password", "second pair without password", "no user", "comma"],
)
def test_flower_does_not_start_with_credentials_anyone_could_guess(
    database_url, idp, basic_auth, named
):
    process = FlowerProcess(flower_env(database_url, idp, basic_auth))
    try:
        code = process.exit_code()
    finally:
        process.stop()

    assert code != 0
    output = "".join(process.lines)
    assert named in output
    assert not BANNER.search(output)
