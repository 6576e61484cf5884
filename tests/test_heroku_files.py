"""The files Heroku reads: app.json (what a new app gets), .python-version (the Python it
installs), requirements.txt (all it installs) and the Procfiles. A mistake in them shows only
on Heroku, so they are checked here against the code that reads the settings."""

from __future__ import annotations

import re
import secrets

import yaml

from common.settings import (
    _VARIABLES,
    MODE_VARIABLES,
    OPERATOR_SECRETS,
    PRODUCTION_REQUIRED,
    Settings,
)
from tests.heroku import ROOT, app_json, procfile

# What the add-ons set: the config var of each attachment.
ADDON_VARIABLES = {"heroku-postgresql": "DATABASE_URL", "heroku-redis": "REDIS_URL"}
# Heroku Postgres's smallest plans (essential-0, -1) take 20 connections in all.
PLAN_CONNECTIONS = 20
FLOWER_PROCFILE = ROOT / "deploy" / "heroku" / "flower" / "Procfile"


def _setting_names() -> set[str]:
    """Every variable the service reads: the mode, the settings, and gunicorn.conf.py's
    knobs."""
    gunicorn = re.findall(
        r"os\.environ\.get\(['\"](\w+)['\"]", (ROOT / "gunicorn.conf.py").read_text()
    )
    return {name for name, _, _ in _VARIABLES} | set(MODE_VARIABLES) | set(gunicorn)


def _made_up(name: str) -> str:
    """What an operator types in for a required variable without a value."""
    return {
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_hex(16)}",
        "OIDC_ISSUER": "https://sso.example.com/realms/donfiles",
    }.get(name, secrets.token_urlsafe(24))


def _new_app_env() -> dict[str, str]:
    """The config vars of an app made from app.json, with the add-ons' URLs."""
    env = {"DATABASE_URL": "postgres://u:p@db.example.com:5432/d"}
    env["REDIS_URL"] = "rediss://:p@redis.example.com:6380"
    for name, spec in app_json()["env"].items():
        if "value" in spec:
            env[name] = spec["value"]
        elif spec.get("generator") == "secret":
            env[name] = secrets.token_hex(32)
        else:
            env[name] = _made_up(name)
    return env


def test_app_json_has_the_shape_heroku_reads():
    app = app_json()

    assert set(app) <= {
        "name", "description", "keywords", "stack", "buildpacks", "addons", "formation", "env"
    }  # fmt: skip
    assert app["buildpacks"] == [{"url": "heroku/python"}]
    assert {addon["plan"].split(":")[0] for addon in app["addons"]} == set(ADDON_VARIABLES)
    for name, spec in app["env"].items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name)
        assert spec["description"], name
        kinds = {"value", "generator", "required"} & set(spec)
        assert len(kinds) == 1, f"{name}: one of value, generator or required"
        assert spec.get("generator", "secret") == "secret"
        assert spec.get("required", True) is True
        assert isinstance(spec.get("value", ""), str), f"{name}: Heroku takes strings"


def test_every_variable_of_app_json_is_a_setting_the_service_reads():
    assert set(app_json()["env"]) <= _setting_names()


def test_app_json_generates_exactly_the_secrets_the_operator_makes_up():
    generated = {name for name, spec in app_json()["env"].items() if "generator" in spec}

    assert generated == {name for name, _, _ in OPERATOR_SECRETS}


def test_an_app_made_from_app_json_has_every_production_setting():
    names = {name: attribute for name, attribute, _ in _VARIABLES}
    given = set(app_json()["env"]) | set(ADDON_VARIABLES.values())

    assert {attribute for name, attribute in names.items() if name in given} >= set(
        PRODUCTION_REQUIRED
    )
    settings = Settings.from_env(_new_app_env())
    assert settings.is_production
    assert settings.redis_ssl_cert_reqs == "none"
    assert settings.trusted_proxies == 1


def test_app_json_runs_every_formation_process_from_the_procfile():
    processes = procfile()
    formation = app_json()["formation"]

    # Every long-running process, but Flower: a second app of its own (deploy/heroku/flower),
    # so that the service's dynos never publish it. The release phase is no dyno.
    assert set(formation) == set(processes) - {"release", "flower"}
    assert formation["beat"]["quantity"] == 1  # exactly one sweep
    assert all(entry["quantity"] >= 1 for entry in formation.values())
    # The release phase migrates before the new dynos start; nothing else does it.
    assert "web.release" in processes["release"]
    assert "scripts" not in app_json()


def test_the_formation_fits_the_smallest_postgres_plan():
    settings = Settings.from_env(_new_app_env())
    env, formation = _new_app_env(), app_json()["formation"]
    web = int(env["WEB_CONCURRENCY"]) * settings.db_pool_size("web")
    worker = settings.db_pool_size("worker")
    release = 1  # it runs while the old dynos still serve

    total = formation["web"]["quantity"] * web + formation["worker"]["quantity"] * worker
    assert total + release <= PLAN_CONNECTIONS


def test_python_version_is_the_one_the_image_and_ci_run():
    version = (ROOT / ".python-version").read_text().strip()
    image = re.search(r"FROM python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text())
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    [setup] = [
        step["with"]
        for step in workflow["jobs"]["test"]["steps"]
        if step.get("uses", "").startswith("actions/setup-python")
    ]
    required = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text())

    assert re.fullmatch(r"3\.\d+", version)
    assert version == image[1] == setup["python-version"] == required[1]


def test_requirements_pin_what_the_redis_transport_imports_undeclared():
    pinned = {
        line.split("==")[0].split("[")[0].lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    transport = (ROOT / ".venv").glob("lib/python*/site-packages/kombu/transport/redis.py")

    # Heroku installs requirements.txt alone; kombu's Redis transport needs `packaging`,
    # which kombu does not declare (here pytest brings it along, so no test run would notice).
    assert any("from packaging" in path.read_text() for path in transport)
    assert {"kombu", "redis", "packaging"} <= pinned


def test_the_flower_app_runs_in_production_unless_told_otherwise_as_the_service_does():
    # tests/test_heroku.py runs it: on PORT, every interface, behind its credentials.
    # Each line of the service's Procfile starts `env APP_ENV="${APP_ENV:-...}" `.
    (mode,) = {tuple(line.split()[:2]) for line in procfile().values()}

    assert mode[1].startswith("APP_ENV=")
    assert tuple(procfile(FLOWER_PROCFILE)["web"].split()[:2]) == mode
