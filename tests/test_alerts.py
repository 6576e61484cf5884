# ruff: noqa: F811 - pytest fixtures imported from tests.sms_support are used by name
"""The alerts (deploy/prometheus) and the dashboard (deploy/grafana) for operators.

promtool (from Debian's prometheus package, `make tools`) checks the rules and the Prometheus
configuration, and runs the rules' own unit tests, which show each alert firing and staying
quiet. Every metric the rules and the dashboard name is then looked for in a live /metrics:
the Procfile's `web` in production (read with METRICS_TOKEN) beside a real Celery worker that
shares its metrics directory, after an SMS went out through the local gateway.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.production import WebServer, production_env, web_server
from tests.sms_support import (  # noqa: F401 - fixtures, used by name
    API_KEY,
    WorkerProcess,
    committed_sms,
    gateway,
    gateway_server,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "order-service.json"
# Where `make tools` puts promtool when the machine has none of its own.
LOCAL_PROMTOOL = ROOT / "var" / "tools" / "bin" / "promtool"
METRICS_TOKEN = secrets.token_urlsafe(32)
HEARTBEAT = "sms_worker_heartbeat_timestamp_seconds"
CREATE_ORDER = "mutation { createOrder(input: {price: 1200.0}) { success order { id } } }"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool") or (str(LOCAL_PROMTOOL) if LOCAL_PROMTOOL.exists() else None)
    assert found, "promtool is needed to check deploy/prometheus (`make tools` installs it)"
    return subprocess.run(
        [found, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=60
    )


# -- the rules and the configuration ---------------------------------------------------------


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path):
    rules = yaml.safe_load(RULES.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "max(sms_outbox_oldest_queued_age_seconds > 300"
    broken = tmp_path / "alerts.yml"
    broken.write_text(yaml.safe_dump(rules))

    assert promtool("check", "rules", str(broken)).returncode != 0


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say():
    result = promtool("test", "rules", RULE_TESTS.name)

    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert tested == set(alerts())


def test_the_unit_tests_fail_when_an_alert_would_not_fire(tmp_path):
    """A threshold raised past what the test's series reach: the unit test says so."""
    raised = RULES.read_text().replace(
        "max(sms_outbox_oldest_queued_age_seconds) > 300",
        "max(sms_outbox_oldest_queued_age_seconds) > 3000",
    )
    (tmp_path / "alerts.yml").write_text(raised)
    shutil.copy(RULE_TESTS, tmp_path)

    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)

    assert result.returncode != 0
    assert "SmsQueuedTooLong" in result.stdout + result.stderr


def test_the_prometheus_configuration_loads_the_rules(tmp_path):
    # The token file must exist for promtool; in a deployment it is a mounted secret.
    secret = tmp_path / "metrics-token"
    secret.write_text(METRICS_TOKEN)
    config = CONFIG.read_text().replace("/run/secrets/metrics-token", str(secret))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(RULES, tmp_path)

    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout
    jobs = {job["job_name"]: job for job in yaml.safe_load(config)["scrape_configs"]}
    assert set(jobs) == {"order-service-web", "order-service-worker"}
    for job in jobs.values():
        assert job["authorization"] == {"type": "Bearer", "credentials_file": str(secret)}


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_the_rules_cover_the_sms_flow():
    rules = alerts()

    assert set(rules) >= {
        "SmsQueuedTooLong",
        "SmsFailuresRising",
        "SmsGatewayBadCredentials",
        "SmsNoWorkerConsuming",
    }
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name


# -- the dashboard ---------------------------------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_the_dashboard_shows_the_api_and_the_sms_flow():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard_panels()
    ids = [panel["id"] for panel in dashboard["panels"]]
    [datasource] = dashboard["templating"]["list"]

    assert dashboard["uid"] == "order-service"
    assert len(ids) == len(set(ids))
    assert {row["title"] for row in dashboard["panels"] if row["type"] == "row"} == {"API", "SMS"}
    # The Prometheus to read is chosen on import: no data source of someone else's Grafana.
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert all(target["expr"] for target in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    named = set().union(*(metric_names(e) for e in dashboard_expressions()))
    for metric in alert_metrics():
        # Each metric an alert watches has a panel to look at when it fires.
        assert metric in named or f"{metric}_bucket" in named, metric


# -- every metric named is one the service exports -------------------------------------------

# PromQL words that are not metrics; functions are told apart by the `(` after them.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (also one of Grafana's, with its
    `$__rate_interval`): its identifiers but label matchers, ranges, grouping labels,
    functions and keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(GROUPING, " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        is_function = text[match.end() :].lstrip().startswith("(")
        if not is_function and match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def test_metric_names_are_found_in_an_expression():
    expression = (
        'sum by (le, operation) (rate(graphql_request_duration_seconds_bucket{op="a b"}'
        "[$__rate_interval])) / on(job) group_left(instance) up offset 5m > bool 0.95 "
        'and absent(sms_outbox_backlog) or time() - max(x:recorded{le="0.5"}[5m:1m])'
    )

    assert metric_names(expression) == {
        "graphql_request_duration_seconds_bucket",
        "up",
        "sms_outbox_backlog",
        "x:recorded",
    }


def alert_metrics() -> set[str]:
    return set().union(*(metric_names(rule["expr"]) for rule in alerts().values()))


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]


def sample_names(exposition: str) -> set[str]:
    """The series names a scrape offers PromQL: a counter's `_total`, a histogram's
    `_bucket`, `_sum` and `_count`, a gauge's own name."""
    return {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def scrape(server: WebServer) -> str:
    response = requests.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.text


def value_of(exposition: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


@pytest.fixture(scope="module")
def service(database_url, idp, app, gateway_server, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The Procfile's `web` in production with METRICS_TOKEN and a real worker sending
    through the local gateway, sharing one metrics directory as processes of one host do."""
    metrics_dir = tmp_path_factory.mktemp("metrics")
    env = production_env(
        database_url,
        idp.issuer,
        METRICS_TOKEN=METRICS_TOKEN,
        AT_API_KEY=API_KEY,
        AT_API_URL=gateway_server.url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        LOG_LEVEL="INFO",
    )
    worker = WorkerProcess(env)
    worker.start()
    try:
        with web_server(env, metrics_dir) as server:
            yield {"web": server, "worker": worker}
    finally:
        worker.stop()


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(
    service, idp, gateway, committed_sms
):
    web = service["web"]
    before = scrape(web)
    token = idp.issue_access_token("jane")
    placed = requests.post(
        f"{web.url}/graphql",
        json={"query": CREATE_ORDER},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert placed.json()["data"]["createOrder"]["success"] is True, placed.text

    def sent() -> str | None:
        """the worker's accepted attempt to show in the web's /metrics"""
        text = scrape(web)
        return text if value_of(text, "sms_attempts_total", outcome="accepted") else None

    exported = sample_names(wait_for(sent, timeout=30))

    assert len(gateway.messages) == 1
    # From the start, so that increase() sees the first refusal the alert is about.
    assert value_of(before, "sms_attempts_total", outcome="bad_credentials") == 0
    for expression in [*(rule["expr"] for rule in alerts().values()), *dashboard_expressions()]:
        missing = metric_names(expression) - exported
        assert not missing, f"{expression}: {sorted(missing)} not in /metrics"


def test_the_worker_heartbeat_advances_until_the_worker_stops(service):
    web, worker = service["web"], service["worker"]

    first = wait_for(lambda: value_of(scrape(web), HEARTBEAT))

    def later() -> float | None:
        """a heartbeat newer than the first"""
        value = value_of(scrape(web), HEARTBEAT)
        return value if value and value > first else None

    latest = wait_for(later, timeout=20)
    assert first > time.time() - 3600  # a Unix time, as the alert reads it
    worker.stop()  # returns once the process is gone: nothing beats for it any more

    # Its last heartbeat stays exported, so the alert sees its age grow.
    stopped = value_of(scrape(web), HEARTBEAT)
    assert stopped is not None
    assert stopped >= latest
