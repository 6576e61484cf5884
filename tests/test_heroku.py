"""Heroku, rehearsed: an app made from app.json, over a TLS-only Redis with a self-signed
certificate (`rediss://`, as Heroku Redis hands out) and a `postgres://` DATABASE_URL. The
release step runs first, then web and worker from their Procfile lines; an order placed through
GraphQL has its SMS reach the gateway. Flower runs as the second app of docs/deploy-heroku.md,
its `web` on PORT. With REDIS_SSL_CERT_REQS=required the same server is refused, and says why.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests
from sqlalchemy import make_url

from dev.sms_gateway import FakeSmsGateway, RunningGateway
from tests.conftest import CLIENT_SECRET, SERVER_URL, _admin_dsn
from tests.heroku import ROOT, Dyno, TlsRedis, free_port, heroku_env, procfile, tls_redis
from tests.sms_support import JANE_PHONE, wait_for

CREATE = """
mutation { createOrder(input: {price: 1200.0, orderDetails: "Deliver ASAP"}) {
  success order { id status } } }
"""
FLOWER_USER = "ops"
WARNING = "REDIS_SSL_CERT_REQS=none"


@pytest.fixture(scope="module")
def redis_tls(tmp_path_factory) -> Iterator[TlsRedis]:
    with tls_redis(tmp_path_factory.mktemp("heroku-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A database of its own, named as Heroku names it: postgres://."""
    name = f"orders_heroku_{uuid.uuid4().hex[:10]}"
    admin = _admin_dsn(SERVER_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(drivername="postgres", database=name)
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def sms_gateway() -> Iterator[RunningGateway]:
    running = FakeSmsGateway(username="sandbox", api_key=secrets.token_hex(16))
    server = running.serve_in_thread("127.0.0.1", 0)
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def operator(idp, sms_gateway, postgres_url, redis_tls) -> dict[str, str]:
    """What the operator and the add-ons add to app.json's environment."""
    return {
        "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{secrets.token_hex(16)}",
        "OIDC_ISSUER": idp.issuer,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "AT_API_KEY": sms_gateway.gateway.api_key,
        "AT_API_URL": sms_gateway.url,
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_tls.url,
    }


@pytest.fixture(scope="module")
def released(operator) -> str:
    """The release phase, run once before any dyno starts; what it wrote."""
    release = Dyno.start("release", procfile()["release"], heroku_env(**operator))
    assert release.wait() == 0, release.output
    return release.output


@contextmanager
def dynos(env: dict[str, str], *names: str) -> Iterator[dict[str, Dyno]]:
    """The app's dynos of these Procfile processes, each with Heroku's PORT; stopped after."""
    started: dict[str, Dyno] = {}
    try:
        for name in names:
            started[name] = Dyno.start(name, procfile()[name], env)
        yield started
    finally:
        for dyno in started.values():
            dyno.stop()


def web_env(operator: dict[str, str], metrics_dir: Path, **changes: str) -> dict[str, str]:
    # The metrics directory is the run's own: gunicorn.conf.py empties its default, shared by
    # every run on this host.
    return heroku_env(
        **operator, PORT=str(free_port()), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), **changes
    )


def serving(web: Dyno, port: str) -> str:
    """The web dyno's URL once it answers /healthz."""
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert web.process.poll() is None, web.output
        try:
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(answers, timeout=90)
    return url


def place_order(url: str, idp: Any) -> dict[str, Any]:
    token = idp.issue_access_token("jane")
    response = requests.post(
        f"{url}/graphql",
        json={"query": CREATE},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_release_step_migrates_the_postgres_url_database(released, postgres_url):
    with psycopg.connect(postgres_url) as connection:
        tables = {row[0] for row in connection.execute("SELECT tablename FROM pg_tables")}

    assert {"alembic_version", "orders", "notifications"} <= tables


def test_an_order_placed_on_heroku_sends_its_sms_over_tls_redis(
    released, operator, idp, sms_gateway, redis_tls, tmp_path
):
    env = web_env(operator, tmp_path)
    with dynos(env, "web", "worker") as running:
        url = serving(running["web"], env["PORT"])
        running["worker"].wait_for(" ready.")
        ready = requests.get(f"{url}/readyz", timeout=10)
        placed = place_order(url, idp)
        sent = wait_for(
            lambda: [m for m in sms_gateway.gateway.messages if m["to"] == JANE_PHONE], timeout=60
        )
        with redis_tls.client() as client:
            counters = client.keys("rate-limits*")

    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    assert placed["data"]["createOrder"]["success"] is True, placed
    assert [message["status_code"] for message in sent] == [101]
    # The SMS limit counted in Redis, over TLS, not in the web process's memory.
    assert counters
    # Each process says once, at its start, that the certificate goes unchecked.
    assert running["web"].output.count(WARNING) == 1
    assert running["worker"].output.count(WARNING) == 1


def test_checking_the_certificate_refuses_the_self_signed_server(released, operator, tmp_path):
    env = web_env(operator, tmp_path, REDIS_SSL_CERT_REQS="required")
    with dynos(env, "web", "worker") as running:
        url = serving(running["web"], env["PORT"])
        ready = requests.get(f"{url}/readyz", timeout=10)
        running["worker"].wait_for("CERTIFICATE_VERIFY_FAILED")

    assert "REDIS_SSL_CERT_REQS" in ready.json()["checks"]["redis"]
    assert ready.json()["checks"]["postgres"] == "ok"
    assert " ready." not in running["worker"].output
    assert WARNING not in running["web"].output


def flower_app_env(redis_tls: TlsRedis, **changes: str | None) -> dict[str, str]:
    """The second app of docs/deploy-heroku.md: the Redis add-on attached, Flower's credentials,
    and nothing else of the service (no database, no provider secrets)."""
    env = {
        **{name: value for name, value in heroku_env().items() if name in ("PATH", "HOME")},
        "APP_ENV": "production",
        "REDIS_URL": redis_tls.url,
        "REDIS_SSL_CERT_REQS": "none",
        "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{secrets.token_hex(16)}",
        "PORT": str(free_port()),
        **changes,
    }
    return {name: value for name, value in env.items() if value is not None}


def _listening(dyno: Dyno) -> set[tuple[str, int]]:
    processes = [psutil.Process(dyno.process.pid)]
    processes += processes[0].children(recursive=True)
    return {
        (connection.laddr.ip, connection.laddr.port)
        for process in processes
        for connection in process.net_connections("inet")
        if connection.status == psutil.CONN_LISTEN
    }


FLOWER_PROCFILE = ROOT / "deploy" / "heroku" / "flower" / "Procfile"


def test_the_flower_app_serves_flower_on_port_behind_its_credentials(redis_tls):
    env = flower_app_env(redis_tls)
    flower = Dyno.start("flower web", procfile(FLOWER_PROCFILE)["web"], env)
    try:
        url = f"http://127.0.0.1:{env['PORT']}"

        def answers() -> bool:
            assert flower.process.poll() is None, flower.output
            try:
                return requests.get(f"{url}/healthcheck", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(answers, timeout=90)
        user, password = env["FLOWER_BASIC_AUTH"].split(":")
        queues = requests.get(f"{url}/api/queues/length", auth=(user, password), timeout=30)
        stranger = requests.get(f"{url}/api/queues/length", timeout=10)
        listening = _listening(flower)
    finally:
        flower.stop()

    # Heroku's router reaches a dyno on PORT, from outside it.
    assert ("0.0.0.0", int(env["PORT"])) in listening  # noqa: S104
    assert stranger.status_code == 401
    # The broker page's own Redis client got through TLS too.
    assert queues.status_code == 200, queues.text
    assert [queue["name"] for queue in queues.json()["active_queues"]] == ["orders"]
    assert WARNING in flower.output


def test_flower_on_port_does_not_start_without_credentials_even_in_development(redis_tls):
    env = flower_app_env(redis_tls, APP_ENV="development", FLOWER_BASIC_AUTH=None)
    flower = Dyno.start("flower web", procfile(FLOWER_PROCFILE)["web"], env)

    assert flower.wait() != 0
    assert "FLOWER_BASIC_AUTH is required when Flower listens on 0.0.0.0" in flower.output
    assert "Traceback" not in flower.output
