"""The README and docs/ against the tree they describe: the README's first screen, every link
and every reference to a document resolving, every setting in the configuration table, every
alert and metric in the monitoring page, and the platform pages against the files those
platforms read."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from common.settings import _VARIABLES, MODE_VARIABLES
from tests.defaults import process_defaults
from tests.docs_support import (
    DOCS,
    README,
    ROOT,
    broken_links,
    broken_references,
    code_blocks,
    section,
    table_names,
)
from tests.heroku import app_json

FIRST_SCREEN_LINES = 24
# What the tree holds besides its own files: installed packages, embedded servers' data.
NOT_OURS = {".git", ".venv", "var", "node_modules", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".json", ".toml", ".txt", ".example", ""}
CONFIGURATION = DOCS / "configuration.md"
COMPOSE = ROOT / "docker-compose.yml"


def documents() -> list[Path]:
    return [README, ROOT / "bench" / "README.md", *sorted(DOCS.glob("*.md"))]


def tree_files() -> list[Path]:
    """The text files of the repository: code, configuration, manifests, documentation."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in NOT_OURS]
        found += [Path(folder, name) for name in files if Path(name).suffix in TEXT_SUFFIXES]
    return found


# -- the README ------------------------------------------------------------------------------


def test_the_first_screen_of_the_readme_shows_make_run_and_make_test():
    first_screen = "\n".join(README.read_text().splitlines()[:FIRST_SCREEN_LINES])
    [commands] = code_blocks(first_screen, "sh")
    makefile = (ROOT / "Makefile").read_text()

    for target in ("run", "test"):
        assert re.search(rf"^make {target}\b", commands, re.MULTILINE), target
        assert re.search(rf"^{target}:.*## ", makefile, re.MULTILINE), target


def test_the_readme_links_every_page_of_docs():
    pages = sorted(DOCS.glob("*.md"))
    readme = README.read_text()

    assert pages
    assert [page.name for page in pages if f"](docs/{page.name}" not in readme] == []


# -- links -----------------------------------------------------------------------------------


def test_every_link_between_the_documents_resolves():
    assert [link for path in documents() for link in broken_links(path)] == []


def test_every_document_the_tree_names_is_there():
    """Comments, alert descriptions and docstrings that send the reader to a page (and a
    heading in it) send them somewhere that exists. (This file's own are broken on purpose.)"""
    files = [path for path in tree_files() if path != Path(__file__)]

    assert [ref for path in files for ref in broken_references(path)] == []


def test_a_link_to_a_missing_page_or_heading_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.docs_support.ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Known heading\n")
    page = tmp_path / "docs" / "b.md"
    page.write_text(
        "[ok](a.md#known-heading) [gone](c.md) [renamed](a.md#old-heading)\n"
        "```sh\n# a comment, no heading\n```\n[here](#a-comment-no-heading)\n"
    )
    comment = tmp_path / "alerts.yml"
    comment.write_text("see docs/a.md#known-heading, docs/a.md#old-heading and docs/c.md\n")

    assert broken_links(page) == [
        "docs/b.md: (c.md) no such file",
        "docs/b.md: (a.md#old-heading) no heading #old-heading",
        "docs/b.md: (#a-comment-no-heading) no heading #a-comment-no-heading",
    ]
    assert broken_references(comment) == [
        "alerts.yml: docs/a.md#old-heading no heading #old-heading",
        "alerts.yml: docs/c.md no such file",
    ]


# -- configuration ---------------------------------------------------------------------------


def service_variables() -> set[str]:
    """Every variable a process of the service reads: the mode, the settings, and the knobs
    gunicorn.conf.py and the Procfile read themselves."""
    return {name for name, _, _ in _VARIABLES} | set(MODE_VARIABLES) | set(process_defaults())


def table_against_the_service(text: str) -> tuple[set[str], set[str]]:
    """The variables the table of `text` leaves out, and those it names that nothing reads."""
    documented = set(table_names(text))
    return service_variables() - documented, documented - service_variables()


def test_the_configuration_table_names_every_variable_the_service_reads():
    assert table_against_the_service(CONFIGURATION.read_text()) == (set(), set())


def test_a_variable_left_out_of_the_configuration_table_is_found():
    text = CONFIGURATION.read_text()
    [row] = [line for line in text.splitlines() if line.startswith("| `SMS_LEASE_SECONDS` |")]

    missing, unknown = table_against_the_service(text.replace(row + "\n", ""))
    assert (missing, unknown) == ({"SMS_LEASE_SECONDS"}, set())
    missing, unknown = table_against_the_service(text.replace("`SMS_LEASE_SECONDS`", "`SMS_LEASE`"))
    assert (missing, unknown) == ({"SMS_LEASE_SECONDS"}, {"SMS_LEASE"})


def test_every_variable_docker_compose_reads_is_documented():
    """The required ones (`${NAME:?}`) on the compose page, the others there or in the
    configuration table."""
    compose = COMPOSE.read_text()
    page = (DOCS / "deploy-compose.md").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", compose))
    read = set(re.findall(r"\$\{(\w+)[:}]", compose))

    def on_page(name: str) -> bool:
        return re.search(rf"`{name}[`=]", page) is not None

    assert required
    assert {name for name in required if not on_page(name)} == set()
    assert {name for name in read - service_variables() if not on_page(name)} == set()


# -- platforms -------------------------------------------------------------------------------


def _commands(block: str) -> list[str]:
    """The commands of a shell block, each on one line."""
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_heroku_commands_make_the_app_app_json_describes():
    """The page's commands by hand give the add-ons, config vars and dynos a new app from
    app.json gets (a `...` is a value only its operator has)."""
    app = app_json()
    commands = _commands(code_blocks(section(DOCS / "deploy-heroku.md", "# Heroku"), "sh")[0])
    addons = [line.split()[2] for line in commands if line.startswith("heroku addons:create ")]
    [config] = [line for line in commands if line.startswith("heroku config:set ")]
    config_vars = dict(re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S+)", config))
    [scale] = [line.split()[2:] for line in commands if line.startswith("heroku ps:scale ")]

    assert addons == [addon["plan"] for addon in app["addons"]]
    assert set(config_vars) == set(app["env"])
    for name, spec in app["env"].items():
        if "value" in spec:
            assert config_vars[name] in (spec["value"], "..."), name
    assert scale == [f"{name}={dyno['quantity']}" for name, dyno in app["formation"].items()]


def test_the_flower_app_on_heroku_uses_a_procfile_of_the_tree():
    [commands] = code_blocks(section(DOCS / "deploy-heroku.md", "## Flower"), "sh")
    [procfile] = re.findall(r"PROCFILE=(\S+)", commands)

    assert (ROOT / procfile).read_text().startswith("web: ")


# -- monitoring ------------------------------------------------------------------------------


def test_the_alert_table_lists_every_alert_rule():
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    table = table_names(section(DOCS / "monitoring.md", "## Alerts and dashboard"))

    assert sorted(table) == sorted(alerts)


def test_the_metrics_page_names_every_series_the_service_serves(app):
    exposition = app.test_client().get("/metrics").get_data(as_text=True)
    # prometheus_client adds a `_created` series to each counter and histogram on its own.
    served = {
        name
        for name in re.findall(r"^# TYPE ((?:graphql|sms)_\w+)", exposition, re.MULTILINE)
        if not name.endswith("_created")
    }
    named = set(
        re.findall(r"`((?:graphql|sms)_\w+)", section(DOCS / "monitoring.md", "## Metrics"))
    )

    assert served
    assert served == named
