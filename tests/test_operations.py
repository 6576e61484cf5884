"""What an operator relies on: health probes, JSON logs with request ids, metrics, the seed
command, and deployment files that validate."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import requests
from sqlalchemy import text

from common.logs import JsonFormatter
from models.db import PING_AFTER_IDLE_SECONDS, db
from tests.clients import GraphQLClient
from tests.conftest import QUEUE, SERVER_URL, _admin_dsn
from tests.factories import JANE_SUB
from tests.production import production_env, web_server
from web.access_log import access_line

ROOT = Path(__file__).resolve().parent.parent


def test_healthz_needs_no_dependency(make_app):
    app = make_app(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")

    response = app.test_client().get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_when_postgres_and_redis_answer(app):
    response = app.test_client().get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


def test_readyz_stays_ready_without_redis_and_names_it_down(make_app, idp, committed):
    # The web serves without Redis (SMS wait QUEUED for the sweep): a Redis blip must not take
    # every web pod out of its Service.
    app = make_app(redis_url="redis://127.0.0.1:1/0")

    response = app.test_client().get("/readyz")
    me = GraphQLClient(app.test_client(), idp.issue_access_token("jane")).execute("{ me { id } }")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("down")
    assert me["me"]["id"]


def test_readyz_is_unavailable_when_postgres_is_down(make_app):
    app = make_app(database_url="postgresql+psycopg://x@127.0.0.1:1/none")

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert response.get_json()["checks"]["postgres"].startswith("down")
    assert response.get_json()["checks"]["redis"] == "ok"


def _json_lines(caplog) -> list[dict]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(record)) for record in caplog.records]


def test_a_pooled_connection_that_died_while_idle_is_replaced_unnoticed(make_app, idp, committed):
    app = make_app()
    client = GraphQLClient(app.test_client(), idp.issue_access_token("jane"))
    client.execute("{ me { id } }")  # leaves one connection in the pool
    with app.app_context():
        pid = db.session.scalar(text("SELECT pg_backend_pid()"))
        db.session.commit()
    with psycopg.connect(_admin_dsn(SERVER_URL), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # as a database restart would
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)

    response = client.post("{ me { id } }")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert "errors" not in response.get_json()


@pytest.fixture
def service_lines() -> Iterator[list[dict]]:
    """Every line logged from here on, at INFO and above, as stdout gets it: formatted when
    it is logged, so each carries the context of the moment (and the thread) it was logged in."""
    lines: list[dict] = []

    class Written(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(self.format(record)))

    handler = Written()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _logged(lines: list[dict], logger: str, starting: str) -> list[dict]:
    return [
        line for line in lines if line["logger"] == logger and line["message"].startswith(starting)
    ]


def test_the_services_own_lines_carry_their_requests_id_and_none_other(
    make_app, session, idp, service_lines
):
    # One SMS an hour per caller: jane's second order is refused, and the service logs it.
    app = make_app(sms_rate_limit="1 per hour", rate_limit_prefix=f"{QUEUE}-ids-{uuid.uuid4().hex}")
    jane = GraphQLClient(app.test_client(), idp.issue_access_token("jane"))
    stranger = GraphQLClient(app.test_client(), "not-a-token")
    place = "mutation Place { createOrder(input: {price: 10}) { success } }"
    jane.post(place)

    refused = jane.post(place, headers={"X-Request-ID": "req-42"})
    unsigned = stranger.post("query Mine { me { id } }")  # the same thread, the next request

    (limited,) = _logged(service_lines, "web.rate_limits", "rate limited")
    assert refused.headers["X-Request-ID"] == "req-42"
    assert (limited["request_id"], limited["operation"]) == ("req-42", "Place")
    assert limited["sub"] == JANE_SUB
    (token,) = _logged(service_lines, "web.auth", "token refused")
    assert token["request_id"] == unsigned.headers["X-Request-ID"] != "req-42"
    assert "sub" not in token
    assert "operation" not in token
    # Between requests the thread carries no request's context: a line it logs now (as a
    # server thread may, between one request and the next) is labelled with none.
    logging.getLogger("web").warning("between requests")
    assert set(service_lines[-1]) == {"time", "level", "logger", "message"}


def test_the_production_web_process_stamps_its_lines_with_each_requests_id(
    database_url, idp, tmp_path
):
    env = production_env(database_url, idp.issuer, LOG_LEVEL="INFO")
    with web_server(env, tmp_path / "metrics") as server:
        answers = [
            requests.post(
                f"{server.url}/graphql",
                json={"query": "{ me { id } }"},
                headers={"Authorization": "Bearer not-a-token", "X-Request-ID": request_id},
                timeout=10,
            )
            for request_id in ("prod-req-1", "prod-req-2")
        ]

    lines = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert [answer.status_code for answer in answers] == [401, 401]
    assert [line["request_id"] for line in _logged(lines, "web.auth", "token refused")] == [
        "prod-req-1",
        "prod-req-2",
    ]
    access = _logged(lines, "gunicorn.access", "POST /graphql")
    assert [line["request_id"] for line in access] == ["prod-req-1", "prod-req-2"]


def test_a_request_without_an_id_gets_one(jane):
    first = jane.post("{ me { id } }").headers["X-Request-ID"]
    second = jane.post("{ me { id } }").headers["X-Request-ID"]

    assert first
    assert second
    assert first != second


def test_an_unusable_request_id_is_replaced(jane):
    response = jane.post("{ me { id } }", headers={"X-Request-ID": "bad id; with spaces"})

    assert response.headers["X-Request-ID"] != "bad id; with spaces"
    assert len(response.headers["X-Request-ID"]) == 32


def test_log_lines_mask_phone_numbers_and_drop_tokens(jane, caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("tests").info("sending to +254712345678 as %s", jane.token)

    line = _json_lines(caplog)[-1]

    assert "+254712345678" not in line["message"]
    assert "+254****678" in line["message"]
    assert jane.token not in json.dumps(line)


def test_an_access_line_is_json_whatever_the_path_holds():
    answered = SimpleNamespace(
        status_code=404, headers=[("Content-Type", "application/json"), ("X-Request-ID", "req-7")]
    )
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": '/a"b\\c'}
    line = json.loads(access_line(answered, environ, timedelta(microseconds=2500)))

    assert line["message"] == 'GET /a"b\\c 404'
    assert (line["status"], line["duration_ms"], line["request_id"]) == (404, 2.5, "req-7")
    assert (line["level"], line["logger"]) == ("INFO", "gunicorn.access")


def test_an_access_line_masks_phone_numbers_and_drops_tokens_in_the_path():
    answered = SimpleNamespace(status_code=404, headers=[])
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/to/+254712345678/eyJhbGciOi.eyJzdWIi.c2ln"}
    line = json.loads(access_line(answered, environ, timedelta(0)))

    assert line["message"] == "GET /to/+254****678/[token] 404"


def test_an_access_line_for_an_answer_gunicorn_made_itself_has_its_status():
    # gunicorn answers a malformed request itself: its response has a status line only.
    answered = SimpleNamespace(status="400 Bad Request", headers=[])
    line = json.loads(access_line(answered, {"REQUEST_METHOD": "GET"}, timedelta(0)))

    assert (line["status"], line["request_id"]) == (400, None)


def test_the_notification_row_carries_the_request_id_to_the_worker(jane, session):
    from models.notifications import Notification

    jane.post(
        "mutation { createOrder(input: {price: 10}) { success } }",
        headers={"X-Request-ID": "trace-me"},
    )

    notification = session.query(Notification).one()
    assert notification.request_id == "trace-me"


def _metric(app, name: str) -> float:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    ]
    return sum(values)


def test_metrics_move_when_an_order_is_placed(app, jane):
    # The operation label is the root field the operation selects, whatever its name.
    series = 'graphql_requests_total{operation="createOrder",outcome="ok"}'
    requests_before = _metric(app, series)
    backlog_before = _metric(app, "sms_outbox_backlog")

    jane.execute("mutation Place { createOrder(input: {price: 10}) { success } }")

    assert _metric(app, series) == requests_before + 1
    assert _metric(app, "sms_outbox_backlog") == backlog_before + 1
    assert _metric(app, 'sms_notifications{status="QUEUED"}') >= 1


def test_metrics_expose_the_documented_series(app):
    text = app.test_client().get("/metrics").get_data(as_text=True)

    for series in (
        "graphql_requests_total",
        "graphql_request_duration_seconds",
        "sms_attempts_total",
        "sms_gateway_duration_seconds",
        "sms_sweep_resends_total",
        "sms_relay_dropped_total",
        "sms_relay_restarts_total",
        "sms_notifications",
        "sms_outbox_backlog",
        "sms_outbox_oldest_queued_age_seconds",
    ):
        assert f"# TYPE {series}" in text, series


def test_seed_loads_demo_customers_once(app, session):
    from models.customers import Customer

    runner = app.test_cli_runner()
    first = runner.invoke(args=["seed"])
    second = runner.invoke(args=["seed"])

    assert first.exit_code == 0, first.output
    assert "seeded 3 customers" in first.output
    assert "seeded 0 customers" in second.output
    assert session.query(Customer).filter(Customer.code.like("DEMO-%")).count() == 3


def test_seed_refuses_production(production_app):
    result = production_app.test_cli_runner().invoke(args=["seed"])

    assert result.exit_code != 0
    assert "development only" in result.output


COMPOSE_SECRETS = {
    "SECRET_KEY": "k" * 40,
    "OIDC_CLIENT_SECRET": "oidc-secret-for-validation",
    "AT_API_KEY": "at-key-for-validation",
    "AT_CALLBACK_SECRET": "callback-secret-for-validation",
    "FLOWER_BASIC_AUTH": "ops:flower-password-for-validation",
    "KEYCLOAK_ADMIN_PASSWORD": "keycloak-password-for-validation",
}


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    compose = shutil.which("docker-compose")
    assert compose, (
        "docker-compose is needed to validate docker-compose.yml (apt-get install docker-compose)"
    )
    base = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS}
    return subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**base, **env},
    )


def test_docker_compose_file_validates_with_the_secrets_set():
    result = _compose_config(COMPOSE_SECRETS)

    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_start_without_real_secrets():
    result = _compose_config({k: v for k, v in COMPOSE_SECRETS.items() if k != "SECRET_KEY"})

    assert result.returncode != 0
    assert "set SECRET_KEY in .env" in result.stderr


@pytest.mark.parametrize("process", ["release", "web", "worker", "beat", "flower"])
def test_procfile_declares_every_process(process):
    lines = (ROOT / "Procfile").read_text().splitlines()

    assert any(line.startswith(f"{process}: ") for line in lines)
