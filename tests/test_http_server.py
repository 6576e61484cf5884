"""The Procfile's `web` process in production mode, over this run's PostgreSQL and Redis, as
clients reach it over HTTP: the GraphQL-over-HTTP spec's reference audit (`auditServer` of the
npm package graphql-http, pinned in tests/http_audit/package-lock.json), a browser's CORS
preflights from the origin CORS_ORIGINS allows and from another, and the published SDL.

Node and npm run the audit; `npm ci` installs the pinned package into tests/http_audit/ when
its node_modules is missing (`make tools` installs Node itself where it is absent).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.production import WebServer, production_env, web_server

ROOT = Path(__file__).resolve().parent.parent
AUDIT_DIR = ROOT / "tests" / "http_audit"
SHOP = "https://shop.example.com"
# What each failed audit's status means: the requirement level of the audit it failed.
LEVELS = {"error": "MUST", "warn": "SHOULD", "notice": "MAY"}
# Installing and auditing are given this long before the test gives up on them (a safeguard
# against hanging, not a measure of speed).
PATIENCE_SECONDS = 300


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: the GraphQL-over-HTTP audit runs on Node.js "
            "(`make tools` installs it, or `apt-get install nodejs npm`)",
            pytrace=False,
        )
    return found


def _locked_version() -> str:
    lock = json.loads((AUDIT_DIR / "package-lock.json").read_text())
    return lock["packages"]["node_modules/graphql-http"]["version"]


def _installed_version() -> str | None:
    installed = AUDIT_DIR / "node_modules" / "graphql-http" / "package.json"
    return json.loads(installed.read_text())["version"] if installed.exists() else None


@pytest.fixture(scope="module")
def node() -> str:
    """Node, with the pinned audit package installed beside tests/http_audit/audit.mjs (again
    when the lock pins another version than the one installed)."""
    node = _tool("node")
    if _installed_version() != _locked_version():
        installed = subprocess.run(
            [_tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=AUDIT_DIR,
            capture_output=True,
            text=True,
            timeout=PATIENCE_SECONDS,
            check=False,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}{installed.stderr}"
    return node


def audit(node: str, url: str) -> list[dict[str, Any]]:
    """Each audit's result: id, name, status (ok, or notice/warn/error), reason."""
    ran = subprocess.run(
        [node, str(AUDIT_DIR / "audit.mjs"), url],
        capture_output=True,
        text=True,
        timeout=PATIENCE_SECONDS,
        check=False,
    )
    assert ran.returncode == 0, f"the audit did not run:\n{ran.stdout}{ran.stderr}"
    return json.loads(ran.stdout)


def failures(results: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The failed audits by requirement level, each as `id name: reason`."""
    failed: dict[str, list[str]] = defaultdict(list)
    for result in results:
        if result["status"] != "ok":
            failed[LEVELS[result["status"]]].append(
                f"{result['id']} {result['name']}: {result['reason']}"
            )
    return dict(failed)


@pytest.fixture(scope="module")
def server(database_url, idp, app, tmp_path_factory) -> Iterator[WebServer]:
    """The production web process, allowing the shop's origin; `app` has migrated the
    database it uses."""
    env = production_env(database_url, idp.issuer, CORS_ORIGINS=SHOP)
    with web_server(env, tmp_path_factory.mktemp("web")) as running:
        yield running


def test_the_production_server_passes_the_graphql_over_http_audit(node, server):
    results = audit(node, f"{server.url}/graphql")

    failed = failures(results)
    assert len(results) > 50  # the whole audit ran
    assert failed.get("MUST", []) == []
    assert failed.get("SHOULD", []) == []
    assert failed.get("MAY", []) == []


def preflight(server: WebServer, origin: str) -> requests.Response:
    return requests.options(
        f"{server.url}/graphql",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )


def test_a_browser_on_the_allowed_origin_may_send_its_token(server, idp):
    answer = preflight(server, SHOP)
    token = idp.issue_access_token("jane")
    request = requests.post(
        f"{server.url}/graphql",
        json={"query": "{ me { id } }"},
        headers={"Origin": SHOP, "Authorization": f"Bearer {token}"},
        timeout=10,
    )

    assert answer.status_code == 204
    assert "Content-Type" not in answer.headers
    assert answer.headers["Vary"] == "Origin"
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    assert "authorization" in answer.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert request.json()["data"]["me"]["id"]
    assert request.headers["Access-Control-Allow-Origin"] == SHOP


def test_a_browser_on_another_origin_is_told_nothing(server):
    answer = preflight(server, "https://evil.example.com")

    assert not [name for name in answer.headers if name.lower().startswith("access-control")]


def test_the_production_server_publishes_its_sdl(server):
    response = requests.get(f"{server.url}/graphql/schema.graphql", timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == (ROOT / "schema.graphql").read_text()
    assert response.headers["Vary"] == "Origin"
