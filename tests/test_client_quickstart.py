"""The README's client quickstart works as pasted: its Python block (gql) and its JavaScript
block (fetch, on Node) each sign in with `login` at the development identity provider and
place an order, against the Procfile's `web` process (gunicorn) in production mode. Only the
URL is changed, to the server's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from models import Order
from models.db import db
from tests.conftest import QUEUE
from tests.docs_support import README, ROOT, code_blocks, section
from tests.factories import JANE_SUB
from tests.production import PATIENCE_SECONDS, WebServer, bare_env, production_env, web_server

SECTION = "## Client quickstart"
README_URL = '"http://127.0.0.1:5000/graphql"'
PLACED = re.compile(r"^placed (\S+) NEW 1200\.00 KES$", re.MULTILINE)


def quickstart_block(language: str) -> str:
    """The first ```language block of the README's client quickstart."""
    blocks = code_blocks(section(README, SECTION), language)
    assert blocks, f"no {language} block under {SECTION!r}"
    return blocks[0]


def pointed_at(code: str, server: WebServer) -> str:
    """The block with its one URL, the one `make run` serves, changed to the server's."""
    assert code.count(README_URL) == 1
    return code.replace(README_URL, f'"{server.url}/graphql"')


@pytest.fixture(scope="module")
def server(database_url, idp, app, tmp_path_factory) -> Iterator[WebServer]:
    """The production web process over the suite's database, signing in at the development
    identity provider; rate limits count under this run's name."""
    env = production_env(database_url, idp.issuer, RATE_LIMIT_PREFIX=f"{QUEUE}-quickstart")
    with web_server(env, tmp_path_factory.mktemp("web")) as running:
        yield running


def placed_order(output: str) -> Order:
    """The order the quickstart printed, as the database holds it."""
    found = PLACED.search(output)
    assert found, output
    return db.session.scalars(select(Order).where(Order.id == uuid.UUID(found[1]))).one()


def assert_placed_for_jane(order: Order) -> None:
    assert str(order.customer_id) == JANE_SUB
    assert order.created_by == JANE_SUB
    assert order.total == Decimal("1200.00")
    assert order.details == "Deliver ASAP"


def run(command: list[str], cwd: Path) -> str:
    """Run a client as a developer would, in a folder of its own and an environment without
    the service's settings; its output when it succeeds."""
    ran = subprocess.run(
        command,
        cwd=cwd,
        env=bare_env(),
        capture_output=True,
        text=True,
        timeout=PATIENCE_SECONDS,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def test_the_python_quickstart_signs_in_and_places_an_order(server, app, committed, tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(pointed_at(quickstart_block("python"), server))

    output = run([sys.executable, str(script)], tmp_path)

    with app.app_context():
        assert_placed_for_jane(placed_order(output))


def test_the_javascript_quickstart_signs_in_and_places_an_order(server, app, committed, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (`make tools` installs it)", pytrace=False)
    script = tmp_path / "quickstart.mjs"
    script.write_text(pointed_at(quickstart_block("js"), server))

    output = run([node, str(script)], tmp_path)

    with app.app_context():
        assert_placed_for_jane(placed_order(output))


def test_the_quickstart_pins_the_gql_it_is_written_for():
    pins = (ROOT / "requirements-dev.txt").read_text().splitlines()
    readme = section(README, SECTION)

    [pin] = [line for line in pins if line.startswith("gql[requests]==")]
    assert f'pip install "{pin}"' in readme
