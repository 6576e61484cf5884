"""Deployment files for users: the Kubernetes manifests in deploy/k8s and the GitHub Actions
workflow. Both are checked against schemas shipped inside PyPI packages, so offline:
kubernetes-validate bundles the Kubernetes API schemas, check-jsonschema vendors the GitHub
workflow schema."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate
from sqlalchemy import make_url

from common.settings import (
    _VARIABLES,
    OPERATOR_SECRETS,
    PROVIDER_SECRETS,
    ConfigError,
    Settings,
)
from tests.defaults import not_defaults

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"

# The oldest Kubernetes these manifests claim to support, and the newest the pinned
# kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.31", "1.37")
IMAGE = "order-service"
CONFIG_MAP = "order-service-config"
SECRET = "order-service-secrets"
# A template of placeholders: not applied with the kustomization, which would reset the real
# Secret to placeholders on every deploy (see kustomization.yaml).
SECRET_TEMPLATE = "secret.example.yaml"
# What the service checks as secrets (common.settings), and the two URLs that carry the
# databases' passwords.
SECRET_KEYS = {
    *(name for name, _, _ in OPERATOR_SECRETS),
    *(name for name, attribute, _ in _VARIABLES if attribute in PROVIDER_SECRETS),
    "FLOWER_BASIC_AUTH",
    "DATABASE_URL",
    "REDIS_URL",
}
PLACEHOLDER = "REPLACE_ME"
# Paths inside the pods, on their emptyDir volume: the root filesystem is read-only.
TMP = "/tmp"  # noqa: S108
# How every Procfile line starts: production unless APP_ENV says otherwise.
PRODUCTION_BY_DEFAULT = 'env APP_ENV="${APP_ENV:-production}" '
# Procfile process -> the workload that runs it.
PROCESSES = {
    "release": "migrate",
    "web": "web",
    "worker": "worker",
    "beat": "beat",
    "flower": "flower",
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


MANIFESTS = sorted(path for path in K8S.glob("*.y*ml") if path.name != "kustomization.yaml")
RESOURCES = [document for path in MANIFESTS for document in _documents(path)]


def _resource(kind: str, name: str) -> dict[str, Any]:
    [found] = [r for r in RESOURCES if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def _pod_spec(workload: str) -> dict[str, Any]:
    kind = "Job" if workload == "migrate" else "Deployment"
    return _resource(kind, workload)["spec"]["template"]["spec"]


def _container(workload: str) -> dict[str, Any]:
    [container] = _pod_spec(workload)["containers"]
    return container


def _all_containers(workload: str) -> list[dict[str, Any]]:
    """The pod's init containers and its containers."""
    pod = _pod_spec(workload)
    return [*pod.get("initContainers", []), *pod["containers"]]


def _config_map() -> dict[str, str]:
    return _resource("ConfigMap", CONFIG_MAP)["data"]


def _secret_template() -> dict[str, Any]:
    [secret] = _documents(K8S / SECRET_TEMPLATE)
    return secret


def _env_names(workload: str) -> set[str]:
    """Variables the workload's container gets: the ConfigMap's and its own `env`."""
    container = _container(workload)
    names = {variable["name"] for variable in container.get("env", [])}
    for source in container.get("envFrom", []):
        if source.get("configMapRef", {}).get("name") == CONFIG_MAP:
            names |= set(_config_map())
        if source.get("secretRef", {}).get("name") == SECRET:
            names |= set(_secret_template()["stringData"])
    return names


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_manifests_exist():
    assert {path.name for path in MANIFESTS} >= {"configmap.yaml", SECRET_TEMPLATE}
    assert {r["kind"] for r in RESOURCES} >= {"Deployment", "Service", "Job", "ConfigMap"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifest_validates_against_the_kubernetes_schema(path, version):
    for resource in _documents(path):
        name = f"{path.name}: {resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
        try:
            # Strict: unknown fields (a typo such as readOnlyRootFileSystem) are errors.
            validated = kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            pytest.fail(f"{name} is invalid for Kubernetes {version}: {where}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{name}: {error.message}")
        assert validated == version


def test_the_validator_rejects_an_unknown_field():
    deployment = yaml.safe_load((K8S / "beat-deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())

    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(
        path.name for path in MANIFESTS if path.name != SECRET_TEMPLATE
    )
    assert "namespace" not in kustomization
    assert [image["name"] for image in kustomization.get("images", [])] == [IMAGE]


def test_manifests_name_no_namespace():
    assert [r["metadata"]["name"] for r in RESOURCES if "namespace" in r["metadata"]] == []


def _probe(container: dict[str, Any], kind: str) -> str:
    """The path a probe of the container asks, on a port the container declares."""
    probe = container[kind]["httpGet"]
    assert probe["port"] in {port["name"] for port in container["ports"]}, kind
    return probe["path"]


def test_the_web_probes_restart_a_stuck_pod_but_never_one_whose_database_is_away(make_app):
    """Kubernetes restarts a pod whose liveness (or startup) probe fails, and takes one whose
    readiness probe fails out of its Service. A database outage must do the second, never the
    first: restarting every web pod would not bring PostgreSQL back."""
    container = _container("web")
    down = make_app(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none").test_client()

    for kind in ("livenessProbe", "startupProbe"):
        assert down.get(_probe(container, kind)).status_code == 200, kind
    assert down.get(_probe(container, "readinessProbe")).status_code == 503
    # /readyz waits up to 1 s on each of Postgres and Redis.
    assert container["readinessProbe"]["timeoutSeconds"] > 2


def test_beat_runs_exactly_one_replica_never_two():
    beat = _resource("Deployment", "beat")

    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not [r for r in RESOURCES if r["kind"] == "HorizontalPodAutoscaler"]


@pytest.mark.parametrize("workload", PROCESSES.values())
def test_pods_run_as_the_images_non_root_user_on_a_read_only_root(workload):
    uid = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    pod = _pod_spec(workload)
    volumes = {volume["name"]: volume for volume in pod["volumes"]}

    # runAsNonRoot needs a numeric user: the Dockerfile's USER is a name.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid == 10001
    for container in _all_containers(workload):
        context = container["securityContext"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert "runAsUser" not in context
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        # gunicorn, prometheus_client and beat write under /tmp.
        assert "emptyDir" in volumes[mounts[TMP]]
        # No tag: kustomization.yaml's `images:` names the one every container runs.
        assert container["image"] == IMAGE


@pytest.mark.parametrize("workload", PROCESSES.values())
def test_pods_have_resources_and_no_service_links(workload):
    pod = _pod_spec(workload)

    for container in _all_containers(workload):
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}
    # Service links would set FLOWER_PORT=tcp://..., which Flower reads as its --port.
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize(("process", "workload"), PROCESSES.items())
def test_pods_run_the_procfile_commands(process, workload):
    names = _env_names(workload)
    # In a pod Flower must listen beyond loopback for its Service to reach it.
    pod_values = {"FLOWER_ADDRESS": "0.0.0.0"} if process == "flower" else {}  # noqa: S104

    def expand(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in pod_values:
            return pod_values[name]
        return f"$({name})" if name in names else default

    # APP_ENV's default is the image's own (the Dockerfile's ENV APP_ENV=production).
    line = _procfile()[process].removeprefix(PRODUCTION_BY_DEFAULT)
    expected = shlex.split(re.sub(r"\$\{(\w+):-([^}]*)\}", expand, line))
    command = _container(workload)["command"]

    assert command == expected
    for reference in re.findall(r"\$\((\w+)\)", " ".join(command)):
        assert reference in names, f"{workload}: $({reference}) is not set"


@pytest.mark.parametrize("workload", ["web", "worker"])
def test_web_and_worker_pods_run_the_release_step_before_they_start(workload):
    [init] = _pod_spec(workload)["initContainers"]

    # The same step as the Job: it waits on the migration lock, so they may all run at once.
    # The image's ENV says production, where the Procfile's lines say it themselves.
    assert init["command"] == shlex.split(
        _procfile()["release"].removeprefix(PRODUCTION_BY_DEFAULT)
    )
    assert init["command"] == _container("migrate")["command"]
    assert init["envFrom"] == _container(workload)["envFrom"]


def test_the_worker_exposes_its_metrics_port_to_the_scraper():
    pod = _resource("Deployment", "worker")["spec"]["template"]
    ports = {port["name"]: port["containerPort"] for port in _container("worker")["ports"]}
    port = int(_config_map()["WORKER_METRICS_PORT"])

    assert ports == {"metrics": port}
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


@pytest.mark.parametrize("workload", PROCESSES.values())
def test_pods_get_the_config_map_and_the_secret(workload):
    sources = _container(workload)["envFrom"]

    assert {"configMapRef": {"name": CONFIG_MAP}} in sources
    assert {"secretRef": {"name": SECRET}} in sources


def test_flower_requires_basic_auth_and_stays_inside_the_cluster():
    env = {variable["name"]: variable for variable in _container("flower")["env"]}
    service = _resource("Service", "flower")

    assert env["FLOWER_BASIC_AUTH"]["valueFrom"] == {
        "secretKeyRef": {"name": SECRET, "key": "FLOWER_BASIC_AUTH"}
    }
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert all("nodePort" not in port for port in service["spec"]["ports"])
    assert not [r for r in RESOURCES if r["kind"] in {"Ingress", "HTTPRoute"}]


def test_services_and_the_disruption_budget_select_their_pods():
    pods = {
        name: _resource("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        for name in ("web", "flower")
    }
    budget = _resource("PodDisruptionBudget", "web")

    for name in ("web", "flower"):
        service = _resource("Service", name)["spec"]
        selector = _resource("Deployment", name)["spec"]["selector"]["matchLabels"]
        port_names = {port["name"] for port in _container(name)["ports"]}
        assert service["selector"] == selector
        assert selector.items() <= pods[name].items()
        assert {port["targetPort"] for port in service["ports"]} <= port_names
    assert budget["spec"]["selector"]["matchLabels"].items() <= pods["web"].items()
    assert budget["spec"]["minAvailable"] < _resource("Deployment", "web")["spec"]["replicas"]


def test_migration_job_runs_once_and_cleans_up():
    job = _resource("Job", "migrate")["spec"]

    assert job["backoffLimit"] <= 3
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_secret_template_holds_only_placeholders():
    secret = _secret_template()

    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == SECRET
    assert "data" not in secret
    assert set(secret["stringData"]) == SECRET_KEYS
    assert set(secret["stringData"].values()) == {PLACEHOLDER}


def test_the_service_refuses_to_start_with_the_placeholders():
    environ = {**_config_map(), **_secret_template()["stringData"]}

    with pytest.raises(ConfigError):
        Settings.from_env(environ)


def test_config_map_with_real_secrets_makes_valid_production_settings():
    secrets = {
        "SECRET_KEY": "5d0c3e1b8a9f47e2b6c1d0a3f8e5b7c2946a1d3e8f0b2c5a",
        "DATABASE_URL": "postgresql://orders:pw@db:5432/orders",
        "REDIS_URL": "redis://redis:6379/0",
        "OIDC_CLIENT_SECRET": "kc-client-secret-9f3b2e7a",
        "AT_API_KEY": "atsk_0b7e4c1d9a2f5863e7c0",
        "AT_CALLBACK_SECRET": "Vq2nX8cLw5RtB1zKj7HmP4sYd9FgA3eU",
        "FLOWER_BASIC_AUTH": "admin:Tk4wQz9LmR2xVb7n",
    }

    settings = Settings.from_env({**_config_map(), **secrets})

    assert settings.is_production
    assert settings.oidc_issuer.startswith("https://")


def test_the_config_map_says_what_the_service_does_without_it_but_where_it_must_not():
    # Production on purpose, with the metrics directory on the pods' emptyDir and the worker's
    # own metrics port; the issuer is an example to change. Anything else is a default.
    deliberate = {"APP_ENV", "OIDC_ISSUER", "PROMETHEUS_MULTIPROC_DIR", "WORKER_METRICS_PORT"}
    settings = {name: value for name, value in _config_map().items() if name not in deliberate}

    assert not_defaults(settings) == {}


def test_config_map_and_secret_hold_every_variable_of_env_example():
    example = re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    config_map = set(_config_map())

    assert not config_map & SECRET_KEYS
    assert config_map | SECRET_KEYS == set(example)
    assert _config_map()["APP_ENV"] == "production"


def _check_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    # The schema is vendored in check-jsonschema: no download.
    command = [sys.executable, "-m", "check_jsonschema"]
    command += ["--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def test_ci_workflow_validates_against_the_github_workflow_schema():
    result = _check_workflow(WORKFLOW)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_check_rejects_an_invalid_workflow(tmp_path):
    workflow = yaml.safe_load(WORKFLOW.read_text())
    workflow["jobs"]["test"]["runs_on"] = workflow["jobs"]["test"].pop("runs-on")
    broken = tmp_path / "ci.yml"
    broken.write_text(yaml.safe_dump(workflow))

    assert _check_workflow(broken).returncode != 0


def test_ci_runs_make_test_on_every_push_and_pull_request_against_its_own_servers():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    [job] = workflow["jobs"].values()
    services = job["services"]
    runs = [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]
    published = {
        name: {int(port.split(":")[0]) for port in service["ports"]}
        for name, service in services.items()
    }

    assert {"push", "pull_request"} <= set(triggers)
    # The suite runs against the job's PostgreSQL and Redis, each checked healthy first.
    assert make_url(job["env"]["DATABASE_URL"]).port in published["postgres"]
    assert urlsplit(job["env"]["REDIS_URL"]).port in published["redis"]
    assert all("--health-cmd" in service["options"] for service in services.values())
    # docker-compose validates docker-compose.yml in the suite: installed before it runs.
    compose = next(i for i, run in enumerate(runs) if "install" in run and "docker-compose" in run)
    make_test = next(i for i, run in enumerate(runs) if re.match(r"make test\b", run))
    assert compose < make_test
