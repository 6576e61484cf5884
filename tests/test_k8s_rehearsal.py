"""A rehearsal of `kubectl apply -k deploy/k8s` on an empty database: every container of the
rendered manifests (web, worker, beat, Flower, the migration Job, the init containers) runs its
command with the environment the ConfigMap and a Secret made from secret.example.yaml give it,
as its pod's user, in a read-only copy of the application, with an empty /tmp of its pod's own
(see tests/k8s_support.py). The migrations exit 0, all at once as a rollout starts them; the
long-running containers stay up, answer their probes and serve.

The Secret holds valid, strong values; the ConfigMap is changed only where this machine is not
a cluster: the IdP is dev/idp.py, the SMS gateway dev/sms_gateway.py, and the queue and the
rate-limit counters are this run's own.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
import yaml
from alembic.script import ScriptDirectory

from dev.sms_gateway import FakeSmsGateway
from tests.conftest import QUEUE
from tests.k8s_support import (
    K8S,
    ROOT,
    Container,
    Pod,
    empty_database,
    plan,
    read_only_copy,
    render,
    scratch_directory,
    snapshot,
)
from tests.production import PATIENCE_SECONDS, production_env

# Every container the manifests run: (pod, container, is an init container).
EXPECTED = {
    ("migrate", "migrate", False),
    ("web", "migrate", True),
    ("web", "web", False),
    ("worker", "migrate", True),
    ("worker", "worker", False),
    ("beat", "beat", False),
    ("flower", "flower", False),
}
# How long every long-running container must keep running once all of them are ready.
STAY_UP_SECONDS = 5


@dataclass
class Cluster:
    pods: list[Pod]
    database_url: str
    app_dir: Path
    app_before: dict[str, tuple[int, int, int]]
    secret: dict[str, str]
    ready_at: float = 0.0

    @property
    def containers(self) -> list[Container]:
        return [c for pod in self.pods for c in (*pod.init_containers, *pod.containers)]

    @property
    def completing(self) -> list[Container]:
        """The containers that run to their end: init containers and the Job's."""
        return [c for c in self.containers if c.init or self.pod(c.pod).kind == "Job"]

    @property
    def serving(self) -> list[Container]:
        return [c for c in self.containers if c not in self.completing]

    def pod(self, name: str) -> Pod:
        [found] = [pod for pod in self.pods if pod.name == name]
        return found

    def container(self, pod: str, name: str) -> Container:
        return next(c for c in self.pod(pod).containers if c.name == name)


def _answers(url: str, **kwargs) -> requests.Response | None:
    try:
        return requests.get(url, timeout=5, **kwargs)
    except requests.ConnectionError:
        return None


def _ready(container: Container) -> bool:
    """Its readiness probe answers 200, or (without one) every port it declares answers."""
    probe = container.probes().get("readinessProbe")
    if probe:
        answer = _answers(f"http://127.0.0.1:{probe[1]}{probe[0]}")
        return answer is not None and answer.status_code == 200
    return all(
        _answers(f"http://127.0.0.1:{port}/") is not None for port in container.ports.values()
    )


def _wait_ready(cluster: Cluster) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    waiting = list(cluster.serving)
    while waiting:
        for container in waiting:
            assert container.process is not None, f"{container.id} never started"
            assert container.process.poll() is None, f"{container.id} exited:\n{container.output}"
        assert time.monotonic() < deadline, f"not ready: {[c.id for c in waiting]}"
        waiting = [c for c in waiting if not _ready(c)]
        time.sleep(0.2)
    cluster.ready_at = time.monotonic()


@pytest.fixture(scope="module")
def cluster(idp) -> Iterator[Cluster]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl renders deploy/k8s: `make tools` installs it (kubernetes-client)"
    rendered = render(kubectl)
    with empty_database() as database_url, scratch_directory() as scratch:
        env = production_env(database_url, idp.issuer, METRICS_TOKEN=secrets.token_urlsafe(32))
        [template] = yaml.safe_load_all((K8S / "secret.example.yaml").read_text())
        values = {key: env[key] for key in template["stringData"]}
        template["stringData"] = values
        gateway = FakeSmsGateway(username="sandbox", api_key=values["AT_API_KEY"])
        gateway_server = gateway.serve_in_thread("127.0.0.1", 0)
        overlay = {
            "OIDC_ISSUER": idp.issuer,
            "AT_API_URL": gateway_server.url,
            "CELERY_QUEUE": QUEUE,
            "RATE_LIMIT_PREFIX": f"{QUEUE}-limits",
        }
        home = scratch / "home"  # the image's home is on its read-only root
        home.mkdir(mode=0o555)
        app_dir = read_only_copy(scratch / "app")
        pods = plan(rendered, template, overlay, scratch, home)
        cluster = Cluster(pods, database_url, app_dir, snapshot(app_dir), values)
        try:
            # Applied together: every pod starts at once, the Job's with the init containers.
            with ThreadPoolExecutor(len(pods)) as starting:
                for started in [starting.submit(p.start, app_dir, PATIENCE_SECONDS) for p in pods]:
                    started.result()
            for container in cluster.completing:
                if container.process is not None:
                    container.process.wait(timeout=PATIENCE_SECONDS)
            yield cluster
        finally:
            for pod in pods:
                pod.stop()
            gateway_server.shutdown()


def _images(rendered: list[dict]) -> set[str]:
    return {
        container["image"]
        for resource in rendered
        if resource["kind"] in ("Deployment", "Job")
        for key in ("initContainers", "containers")
        for container in resource["spec"]["template"]["spec"].get(key, [])
    }


def test_one_kustomize_images_entry_names_the_image_of_every_container(tmp_path):
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl renders deploy/k8s: `make tools` installs it (kubernetes-client)"
    overlay = tmp_path / "k8s"
    shutil.copytree(K8S, overlay)
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    # What `kustomize edit set image order-service=registry.example.com/...:1.4.2` writes.
    [entry] = kustomization["images"]
    entry.update(newName="registry.example.com/order-service", newTag="1.4.2")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    assert _images(render(kubectl)) == {"order-service:latest"}
    assert _images(render(kubectl, overlay)) == {"registry.example.com/order-service:1.4.2"}


def test_every_container_of_the_manifests_is_rehearsed(cluster):
    rehearsed = {(c.pod, c.name, c.init) for c in cluster.containers}

    assert rehearsed == EXPECTED


def test_the_migration_job_and_every_init_container_exit_0(cluster):
    ended = {c.id: c.process.returncode if c.process else None for c in cluster.completing}

    assert set(ended.values()) == {0}, "\n".join(
        f"--- {c.id} exited {ended[c.id]}:\n{c.output}" for c in cluster.completing
    )


def test_the_schema_is_migrated_to_its_head(cluster):
    with psycopg.connect(cluster.database_url) as connection:
        versions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]

    assert versions == ScriptDirectory(str(ROOT / "migrations")).get_heads()


def test_every_long_running_container_stays_up(cluster):
    _wait_ready(cluster)
    time.sleep(max(0.0, cluster.ready_at + STAY_UP_SECONDS - time.monotonic()))

    exited = [c for c in cluster.serving if c.process.poll() is not None]

    assert not exited, "\n".join(f"--- {c.id}:\n{c.output}" for c in exited)


def test_every_probe_answers_200(cluster):
    _wait_ready(cluster)
    probes = {
        f"{c.id} {kind} {path}": _answers(f"http://127.0.0.1:{port}{path}")
        for c in cluster.serving
        for kind, (path, port) in c.probes().items()
    }

    assert {name: answer and answer.status_code for name, answer in probes.items()} == {
        name: 200 for name in probes
    }
    assert any("readinessProbe /readyz" in name for name in probes)


def test_the_web_is_ready_and_serves_a_user_who_signs_in(cluster):
    _wait_ready(cluster)
    web = f"http://127.0.0.1:{cluster.container('web', 'web').ports['http']}"

    ready = requests.get(f"{web}/readyz", timeout=10)
    login = requests.post(
        f"{web}/graphql",
        json={
            "query": 'mutation { login(input: {username: "jane", password: "jane"}) '
            "{ success accessToken } }"
        },
        timeout=10,
    ).json()["data"]["login"]
    me = requests.post(
        f"{web}/graphql",
        json={"query": "{ me { id } }"},
        headers={"Authorization": f"Bearer {login['accessToken']}"},
        timeout=10,
    ).json()

    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}
    assert login["success"] is True
    assert me["data"]["me"]["id"]


def test_the_worker_serves_its_metrics_on_the_port_it_declares(cluster):
    _wait_ready(cluster)
    worker = cluster.container("worker", "worker")
    url = f"http://127.0.0.1:{worker.ports['metrics']}/metrics"

    scraped = requests.get(
        url, headers={"Authorization": f"Bearer {cluster.secret['METRICS_TOKEN']}"}, timeout=10
    )
    stranger = requests.get(url, timeout=10)

    assert scraped.status_code == 200
    assert "sms_attempts_total" in scraped.text
    assert stranger.status_code == 401


def _user_of(container: Container) -> int:
    """Who the container's processes must be: its runAsUser when this test runs as root (and so
    can switch), else this test's own user."""
    return container.uid if os.geteuid() == 0 else os.geteuid()


def test_every_process_runs_as_its_pods_user(cluster):
    _wait_ready(cluster)
    running = {}
    for container in cluster.serving:
        process = psutil.Process(container.process.pid)
        tree = [process, *process.children(recursive=True)]
        running[container.id] = {member.uids().effective for member in tree}
    # The migrations have ended: the metrics files they made in their pod's /tmp say who.
    owners = {
        pod.name: {path.stat().st_uid for path in (pod.tmp / "metrics").iterdir()}
        for pod in cluster.pods
    }

    assert running == {c.id: {_user_of(c)} for c in cluster.serving}
    assert owners == {pod.name: {_user_of(pod.containers[0])} for pod in cluster.pods}
    assert all(c.uid != 0 for c in cluster.containers)  # runAsNonRoot


def test_each_pod_writes_only_in_its_own_tmp(cluster):
    _wait_ready(cluster)

    assert snapshot(cluster.app_dir) == cluster.app_before
    # Each pod made its metrics directory in its empty /tmp; beat keeps its schedule there.
    assert all(any((pod.tmp / "metrics").iterdir()) for pod in cluster.pods)
    assert list(cluster.pod("beat").tmp.glob("celerybeat-schedule*"))
