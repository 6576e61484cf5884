"""Attacks through the headers: a page that frames, sniffs or caches an answer, a client that
claims TLS or another address, a request id that smuggles a header or a log line.

Production mode over real PostgreSQL and Redis with the development identity provider; a
development app for GraphiQL's page; a real gunicorn started as the Procfile starts it for
what the proxy in front may and may not claim.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask

from common.logs import JsonFormatter
from common.settings import ConfigError, Settings
from tests.conftest import CLIENT_SECRET
from web.security import graphiql_policy

ROOT = Path(__file__).resolve().parents[2]
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000; includeSubDomains"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
BAD_TOKEN = "Bearer not-a-token"
ME = {"query": "{ me { id } }"}
JSON = "application/json"


def assert_locked_down(response) -> None:
    """The headers every answer carries, whatever made it."""
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Security-Policy"] == API_POLICY
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Request-ID"]


@pytest.fixture
def prod(production_app: Flask, session: Any) -> Flask:
    """The production app; `session` rolls back what a request writes."""
    return production_app


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """The JSON log lines as they are written, formatted at the moment of logging."""
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(self.format(record)))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lines
    root.removeHandler(handler)


# -- every answer ------------------------------------------------------------------------------


def _failing_view():
    raise RuntimeError("a bug in a view")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/graphql", {"json": {"query": "{ __typename }"}}, 200),
        ("post", "/graphql/", {"json": ME}, 200),
        ("post", "/graphql", {"data": "{", "content_type": JSON}, 400),
        ("post", "/graphql", {"data": "query", "content_type": "text/plain"}, 415),
        ("post", "/graphql", {"json": ME, "headers": {"Authorization": BAD_TOKEN}}, 401),
        ("post", "/graphql", {"data": "x" * (65 * 1024), "content_type": JSON}, 413),
        ("get", "/graphql", {"headers": {"Accept": "text/html"}}, 406),
        ("get", "/graphql", {"query_string": {"query": "{ me { id } }"}}, 200),
        ("get", "/graphql", {"query_string": {"query": "mutation { __typename }"}}, 405),
        ("delete", "/graphql", {}, 405),
        ("get", "/healthz", {}, 200),
        ("get", "/readyz", {}, 200),
        ("get", "/metrics", {}, 404),  # production without METRICS_TOKEN: no metrics
        ("post", "/callbacks/africastalking/delivery?key=guess", {"data": {"id": "x"}}, 403),
        ("get", "/no/such/page", {}, 404),
        ("get", "/test-only/fails", {}, 500),
    ],
)
def test_every_answer_is_locked_down_whatever_made_it(prod, method, path, kwargs, status):
    # A view that fails as a bug would: the answer comes from the app's error handler.
    prod.add_url_rule("/test-only/fails", "test_only_fails", _failing_view)

    response = getattr(prod.test_client(), method)(path, **kwargs)

    assert response.status_code == status
    assert_locked_down(response)
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP


@pytest.mark.parametrize("operation", ["login", "refreshToken"])
def test_answers_carrying_tokens_are_never_stored(prod, operation):
    client = prod.test_client()
    login = client.post(
        "/graphql",
        json={
            "query": "mutation($input: LoginInput!) { login(input: $input) "
            "{ accessToken refreshToken success } }",
            "variables": {"input": {"username": "jane", "password": "jane"}},
        },
    )
    tokens = login.get_json()["data"]["login"]
    assert tokens["success"] is True
    response = login
    if operation == "refreshToken":
        response = client.post(
            "/graphql",
            json={
                "query": "mutation($token: String!) { refreshToken(input: {refreshToken: $token})"
                " { accessToken refreshToken success } }",
                "variables": {"token": tokens["refreshToken"]},
            },
        )
        assert response.get_json()["data"]["refreshToken"]["accessToken"]

    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Security-Policy"] == API_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_view_that_chooses_its_own_caching_keeps_it(prod):
    # Room for answers that may be kept (a GET query with `private, max-age`): the default
    # only fills in what a view left unsaid.
    def cacheable():
        return {"ok": True}, 200, {"Cache-Control": "private, max-age=60"}

    prod.add_url_rule("/test-only/cacheable", "test_only_cacheable", cacheable)

    response = prod.test_client().get("/test-only/cacheable")

    assert response.headers["Cache-Control"] == "private, max-age=60"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- HSTS and what a client may claim -----------------------------------------------------------


def test_production_over_tls_sends_hsts(prod):
    response = prod.test_client().get("/healthz", base_url="https://orders.example.com")

    assert response.headers["Strict-Transport-Security"] == HSTS


def test_a_client_claiming_tls_gets_no_hsts_when_no_proxy_is_trusted(prod):
    response = prod.test_client().get(
        "/healthz", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    )

    assert "Strict-Transport-Security" not in response.headers


def test_development_never_sends_hsts(app):
    response = app.test_client().get("/healthz", base_url="https://localhost")

    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("forwarded_proto", "hsts"),
    [("https", True), ("http", False), (None, False), ("https, http", False)],
)
def test_behind_one_trusted_proxy_its_scheme_decides(make_app, forwarded_proto, hsts):
    behind_router = make_app(env="production", secret_key="x" * 40, trusted_proxies=1)
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}

    response = behind_router.test_client().get("/healthz", headers=headers)

    # "https, http": a client's own claim, then the router's: the router's, the last, counts.
    assert ("Strict-Transport-Security" in response.headers) is hsts


@pytest.mark.parametrize("value", ["-1", "one", "1.5"])
def test_a_typo_in_trusted_proxies_stops_production_naming_it(value):
    environment = {
        "APP_ENV": "production",
        "SECRET_KEY": "k" * 40,
        "TRUSTED_PROXIES": value,
    }

    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        Settings.from_env(environment)


def test_trusted_proxies_defaults_to_none():
    assert Settings.from_env({}).trusted_proxies == 0
    assert Settings.from_env({"TRUSTED_PROXIES": "1"}).trusted_proxies == 1


# -- request ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "x" * 65,
        "two words",
        "id\r\nSet-Cookie: session=stolen",
        "trace-7\n",
        "caf\u00e9-7",
        "\u2028line",
        "",
    ],
    ids=["long", "spaced", "crlf", "trailing-lf", "non-ascii", "unicode-separator", "empty"],
)
def test_an_unusable_request_id_is_replaced_in_the_answer_and_the_logs(prod, log_lines, given):
    # Straight into the WSGI environment, as a lax server in front might hand it over.
    response = prod.test_client().post(
        "/graphql",
        json=ME,
        headers={"Authorization": BAD_TOKEN},
        environ_overrides={"HTTP_X_REQUEST_ID": given},
    )

    request_id = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(request_id)
    refused = [line for line in log_lines if line["message"].startswith("token refused")]
    assert [line["request_id"] for line in refused] == [request_id]


@pytest.mark.parametrize("given", ["trace-7", "A.b_c:d-9", "x" * 64])
def test_a_short_plain_request_id_is_kept(prod, log_lines, given):
    response = prod.test_client().post(
        "/graphql",
        json=ME,
        headers={"Authorization": BAD_TOKEN, "X-Request-ID": given},
    )

    assert response.headers["X-Request-ID"] == given
    assert [line.get("request_id") for line in log_lines if "token refused" in line["message"]] == [
        given
    ]


def test_a_request_id_does_not_outlive_its_request(prod, log_lines):
    client = prod.test_client()
    headers = {"Authorization": BAD_TOKEN}
    client.post("/graphql", json=ME, headers={**headers, "X-Request-ID": "first"})

    # The same thread, between two requests (a gthread worker's thread, say).
    logging.getLogger("tests.between").warning("between requests")
    second = client.post("/graphql", json=ME, headers=headers)

    first_line, second_line = [line for line in log_lines if "token refused" in line["message"]]
    (between,) = [line for line in log_lines if line["message"] == "between requests"]
    assert first_line["request_id"] == "first"
    assert "request_id" not in between
    assert second_line["request_id"] == second.headers["X-Request-ID"] != "first"


# -- GraphiQL's page ----------------------------------------------------------------------------


def _policy(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for directive in header.split(";"):
        name, *sources = directive.split()
        assert name not in directives, f"{name} given twice"
        directives[name] = sources
    return directives


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _allows(sources: list[str], url: str) -> bool:
    parts = urlsplit(url)
    return f"{parts.scheme}:" in sources or f"{parts.scheme}://{parts.netloc}" in sources


@pytest.fixture
def graphiql(app: Flask):
    response = app.test_client().get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True), _policy(response.headers["Content-Security-Policy"])


def test_graphiql_runs_exactly_its_own_inline_scripts(graphiql):
    html, policy = graphiql
    inline = re.findall(r"<script(?![^>]*\ssrc=)[^>]*>(.*?)</script>", html, flags=re.DOTALL)
    assert len(inline) == 2  # the import map, and the module that starts GraphiQL

    hashes = {source for source in policy["script-src"] if source.startswith("'sha")}
    assert hashes == {_sha256(block) for block in inline}
    forbidden = {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "https:", "http:"}
    assert not forbidden & set(policy["script-src"])
    assert not [source for source in policy["script-src"] if source.startswith("'nonce-")]
    # Inline event handlers would need 'unsafe-hashes': the page has none.
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html)


def test_graphiql_loads_scripts_only_from_where_its_page_says(graphiql):
    html, policy = graphiql
    import_map = re.search(r'<script type="importmap">(.*?)</script>', html, flags=re.DOTALL)
    assert import_map
    modules = list(json.loads(import_map[1])["imports"].values())
    preloads = re.findall(r'<link rel="modulepreload" href="([^"]+)"', html)
    assert modules
    assert preloads

    sources = [source for source in policy["script-src"] if not source.startswith("'sha")]
    assert all(_allows(sources, url) for url in modules + preloads)
    # And nothing the page does not name.
    for source in sources:
        assert any(_allows([source], url) for url in modules + preloads), source


def test_graphiql_styles_and_everything_else(graphiql):
    html, policy = graphiql
    stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
    assert stylesheets
    assert all(_allows(policy["style-src"], url) for url in stylesheets)
    # Monaco adds <style> elements as it runs: inline styles stay allowed, which a hash or a
    # nonce in the list would silently turn off.
    assert re.search(r"<style>", html)
    assert "'unsafe-inline'" in policy["style-src"]
    assert not [s for s in policy["style-src"] if s.startswith(("'sha", "'nonce-"))]

    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]  # GraphiQL posts to this page's own URL
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'none'"]
    # Monaco's workers: made from blob: URLs, importing their code from GraphiQL's CDN.
    assert policy["worker-src"] == ["blob:", *[s for s in policy["script-src"] if "://" in s]]
    assert policy["font-src"] == ["data:"]
    assert policy["img-src"] == ["data:"]


def test_a_script_is_hashed_with_the_line_ends_a_browser_reads():
    # A browser reads CR LF and a lone CR as LF before it hashes a script.
    page = "<script>let a = 1;\r\nlet b = 2;\rgo();</script><script src=x.js></script>"

    policy = _policy(graphiql_policy(page))

    assert [s for s in policy["script-src"] if s.startswith("'sha")] == [
        _sha256("let a = 1;\nlet b = 2;\ngo();")
    ]


def test_graphiql_page_carries_the_other_headers(app):
    response = app.test_client().get("/graphql", headers={"Accept": "text/html"})

    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


# -- a real gunicorn, as the Procfile starts it --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _procfile_command(process: str) -> list[str]:
    """The Procfile line run by a shell, as honcho and Heroku run it."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name == process:
            return ["sh", "-c", f"exec {command.strip()}"]
    raise AssertionError(f"no {process} process in the Procfile")


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    process = subprocess.Popen(
        _procfile_command("web"),
        cwd=ROOT,
        env={**env, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("gunicorn did not start:\n" + process.communicate()[0])
        time.sleep(0.1)


@pytest.fixture
def production_env(settings: Settings, idp: Any, tmp_path: Path) -> dict[str, str]:
    """The environment of a production web dyno, with this run's database and queue."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name in ("HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    }
    return {
        **inherited,
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": settings.database_url,
        # Production refuses the development default; this names the same server.
        "REDIS_URL": "redis://127.0.0.1:6379"
        if settings.redis_url == Settings().redis_url
        else settings.redis_url,
        "CELERY_QUEUE": settings.celery_queue,
        "OIDC_ISSUER": idp.issuer,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "AT_API_KEY": "at-key-for-tests",
        "AT_CALLBACK_SECRET": secrets.token_hex(32),
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(16)}",
        "WEB_CONCURRENCY": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


def _access_lines(output: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in output.splitlines() if '"gunicorn.access"' in line]
    return {line["request_id"]: line for line in lines}


@pytest.mark.parametrize("trusted_proxies", [None, "1"])
def test_gunicorn_believes_forwarded_headers_only_from_trusted_proxies(
    production_env, trusted_proxies
):
    env = dict(production_env)
    if trusted_proxies:
        env["TRUSTED_PROXIES"] = trusted_proxies
    process, base = _serve(env)
    # The test is a client on 127.0.0.1, one of gunicorn's own forwarded_allow_ips.
    claims = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "198.51.100.1, 203.0.113.7",
        "X-Request-ID": f"claims-{uuid.uuid4().hex[:8]}",
    }
    plain = {"X-Request-ID": f"plain-{uuid.uuid4().hex[:8]}"}
    try:
        claimed = requests.get(f"{base}/healthz", headers=claims, timeout=5)
        unclaimed = requests.get(f"{base}/healthz", headers=plain, timeout=5)
        long_id = requests.get(f"{base}/healthz", headers={"X-Request-ID": "x" * 65}, timeout=5)
    finally:
        process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
        output, _ = process.communicate(timeout=30)

    access = _access_lines(output)
    assert "Strict-Transport-Security" not in unclaimed.headers
    assert access[plain["X-Request-ID"]]["client"] == "127.0.0.1"
    if trusted_proxies:
        # The router's word: TLS, and the address it saw connect (the last one it appended).
        assert claimed.headers["Strict-Transport-Security"] == HSTS
        assert access[claims["X-Request-ID"]]["client"] == "203.0.113.7"
    else:
        assert "Strict-Transport-Security" not in claimed.headers
        assert access[claims["X-Request-ID"]]["client"] == "127.0.0.1"
    for response in (claimed, unclaimed, long_id):
        assert_locked_down(response)
    replaced = long_id.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(replaced)
    assert access[replaced]["message"] == "GET /healthz 200"
