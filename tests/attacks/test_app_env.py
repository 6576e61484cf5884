"""Attack: a typo in APP_ENV. `Production`, ` production` or `prod` must give production (no
GraphiQL, no introspection, no suggestions, no development secret key) and never development
mode; a value that is no known mode stops every process of the Procfile at start, with a message
naming the variable and no traceback. APP_ENV forgotten (unset or empty) where production runs,
the Procfile's processes or the image, is production too; `make run` says development itself.

The processes run as the Procfile starts them, over this run's PostgreSQL and Redis and the
development identity provider.
"""

from __future__ import annotations

import subprocess

import pytest
import requests

from tests.production import (
    ROOT,
    assert_refused_readably,
    bare_env,
    production_env,
    refusal,
    web_server,
)

# Each process start costs seconds: tests/test_config.py reads every other spelling.
SPELLINGS = ["Production", " production", "prod"]
PROCESSES = ["web", "worker", "beat", "flower", "release"]
INTROSPECTION = {"query": "{ __schema { types { name } } }"}
MISSPELLED = {"query": "{ allOrders(frist: 2) { id } }"}
# A request error is then 400, not the 200 an application/json client gets.
MODERN = {"Accept": "application/graphql-response+json"}


@pytest.fixture
def env(database_url, idp, app):
    """`env(**changes)`: a complete production environment (over the migrated database)."""
    return lambda **changes: production_env(database_url, idp.issuer, **changes)


def _graphql_answers(url: str) -> dict[str, requests.Response]:
    return {
        "graphiql": requests.get(f"{url}/graphql", headers={"Accept": "text/html"}, timeout=10),
        "introspection": requests.post(
            f"{url}/graphql", json=INTROSPECTION, headers=MODERN, timeout=10
        ),
        "misspelled": requests.post(f"{url}/graphql", json=MISSPELLED, timeout=10),
    }


@pytest.mark.parametrize("spelling", SPELLINGS, ids=repr)
def test_a_spelling_of_production_serves_production(env, spelling, tmp_path):
    with web_server(env(APP_ENV=spelling), tmp_path) as server:
        answers = _graphql_answers(server.url)

    assert answers["graphiql"].status_code == 406  # JSON only, and it asked for a page
    assert "graphiql" not in answers["graphiql"].text.lower()
    assert answers["introspection"].status_code == 400
    assert "introspection is disabled" in answers["introspection"].text
    assert "data" not in answers["introspection"].json()
    assert "Did you mean" not in answers["misspelled"].text


@pytest.mark.parametrize("unset", [None, ""], ids=["unset", "empty"])
def test_without_app_env_the_web_serves_production(env, unset, tmp_path):
    with web_server(env(APP_ENV=unset), tmp_path) as server:
        answers = _graphql_answers(server.url)

    assert answers["graphiql"].status_code == 406  # JSON only, and it asked for a page
    assert answers["introspection"].status_code == 400
    assert "Did you mean" not in answers["misspelled"].text


@pytest.mark.parametrize("process", PROCESSES)
def test_without_app_env_every_process_refuses_a_weak_secret(env, process):
    # Development would take this secret and start.
    result = refusal(process, env(APP_ENV=None, SECRET_KEY="x" * 40))

    assert_refused_readably(result, "SECRET_KEY is too easy to guess")


def test_the_image_runs_production_unless_told_otherwise():
    instructions = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    settings = [line.split()[1:] for line in instructions.splitlines() if line.startswith("ENV ")]

    assert "APP_ENV=production" in [word for words in settings for word in words]


def test_make_run_runs_development():
    recipe = subprocess.run(
        ["make", "--dry-run", "run"],
        cwd=ROOT,
        env=bare_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")

    [run] = [line for line in recipe.splitlines() if "honcho start" in line]
    # Set for dev.services, and so for everything it starts.
    settings, _, _ = run.partition(" -m dev.services ")
    assert "APP_ENV=${APP_ENV:-development} " in settings


def test_development_serves_what_production_hides(env, tmp_path):
    # The control for the test above: its assertions fail against development mode.
    with web_server(env(APP_ENV="development"), tmp_path) as server:
        answers = _graphql_answers(server.url)

    assert answers["graphiql"].status_code == 200
    assert "graphiql" in answers["graphiql"].text.lower()
    assert answers["introspection"].status_code == 200
    assert "Did you mean" in answers["misspelled"].text


def test_a_spelling_of_production_never_falls_back_to_the_development_secret_key(env):
    result = refusal("web", env(APP_ENV=" Prod\n", SECRET_KEY=None))

    assert_refused_readably(result, "SECRET_KEY")


def test_flask_env_spelled_production_means_production(env):
    result = refusal("web", env(APP_ENV=None, FLASK_ENV=" Production ", SECRET_KEY=None))

    assert_refused_readably(result, "SECRET_KEY")


def test_an_unknown_mode_stops_the_web_at_start_naming_app_env(env):
    result = refusal("web", env(APP_ENV="prodution"))

    assert_refused_readably(result, "APP_ENV='prodution' is not a known mode")


@pytest.mark.parametrize("process", PROCESSES)
def test_an_unknown_mode_stops_every_process_even_without_production_settings(process):
    # No secrets, no database: what development would start with. It must still refuse.
    result = refusal(process, bare_env(APP_ENV="staging"))

    assert_refused_readably(result, "APP_ENV='staging' is not a known mode")


def test_an_unknown_flask_env_stops_the_worker_naming_flask_env(env):
    result = refusal("worker", env(FLASK_ENV="produciton"))

    assert_refused_readably(result, "FLASK_ENV='produciton' is not a known mode")
