"""What a cluster would do with deploy/k8s, done on this machine without one.

`render()` is `kubectl kustomize deploy/k8s`; `plan()` turns the rendered Deployments and Job
into pods whose containers carry what a kubelet would give them: the command with `$(VAR)`
expanded, the environment from the image, `envFrom` and `env`, the user of their
`securityContext`, and their ports and probes. `Pod.start()` runs them as a pod runs: init
containers one after the other to completion, then the containers, each as its `runAsUser`
(when the test runs as root) in a read-only copy of the application, with the pod's own empty
`/tmp` (its `emptyDir`) as TMPDIR and in place of `/tmp` wherever the env or the command says
`/tmp`.

Only what cannot be the same on one machine differs: every pod here shares the machine's
network, so each declared port is given a free one, and a pod's `/tmp` is a directory.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from sqlalchemy import make_url

from tests.conftest import SERVER_URL, _admin_dsn

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
BIN = ROOT / ".venv" / "bin"
TMP = "/tmp"  # noqa: S108 - the path the manifests mount each pod's emptyDir at
# What the Dockerfile leaves out of the image (.dockerignore), left out of the copy too.
NOT_IN_IMAGE = (".venv", "var", ".git", "__pycache__", ".pytest_cache", ".ruff_cache")
NOT_IN_IMAGE += (".coverage*", "htmlcov", ".env", "results.json")
# Running as the pods' user, the Python under test may sit where only root may look (pyenv
# under /root): the image installs it for everyone. Reading everything is the one right kept;
# writing stays that of the pod's user, which is what the rehearsal checks.
READ_ANYWHERE = "dac_read_search"


def render(kubectl: str, directory: Path = K8S) -> list[dict[str, Any]]:
    """The resources `kubectl apply -k deploy/k8s` would send to a cluster."""
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def image_env() -> dict[str, str]:
    """The Dockerfile's `ENV` settings, which every container of the image starts with."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` in a command or an env value; `$$` is a literal `$`."""
    return re.sub(
        r"\$\$|\$\((\w+)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


def in_pod_tmp(text: str, tmp: Path) -> str:
    """`text` with the pod's /tmp (its emptyDir) at `tmp`."""
    return re.sub(r"(?<![\w/.])/tmp(?=/|$)", str(tmp), text)


@dataclass
class Container:
    """One container of a pod, as a kubelet would start it."""

    pod: str
    name: str
    init: bool
    spec: dict[str, Any]
    command: list[str]
    env: dict[str, str]
    uid: int | None
    gid: int | None
    groups: list[int]
    ports: dict[str, int]  # port name -> the free port standing for its containerPort
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def id(self) -> str:
        return f"{self.pod}/{'init:' if self.init else ''}{self.name}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def probes(self) -> dict[str, tuple[str, int]]:
        """Its HTTP probes by kind (`readinessProbe`...): path and the port standing in."""
        found = {}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = self.spec.get(kind, {}).get("httpGet")
            if http:
                port = http["port"]
                found[kind] = (http["path"], self.ports[port] if isinstance(port, str) else port)
        return found

    def start(self, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [*_as_user(self.uid, self.gid, self.groups), *self.command],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self.lines.extend, args=(self.process.stdout,))
        self.reader.daemon = True
        self.reader.start()

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds, as the kubelet stops a container."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.join(timeout=10)
        self.process.stdout.close()


@dataclass
class Pod:
    """A Deployment's or a Job's pod: its init containers, its containers, its /tmp."""

    name: str
    kind: str
    spec: dict[str, Any]
    tmp: Path
    init_containers: list[Container]
    containers: list[Container]

    def start(self, cwd: Path, patience: float) -> None:
        """Run the init containers in order, each to its end; start the containers only if
        every one of them exited 0, as the kubelet does."""
        for container in self.init_containers:
            container.start(cwd)
            try:
                container.process.wait(timeout=patience)
            except subprocess.TimeoutExpired:
                container.stop(0)
            if container.process.returncode != 0:
                return
        for container in self.containers:
            container.start(cwd)

    def stop(self) -> None:
        for container in [*self.containers, *self.init_containers]:
            container.stop(self.spec.get("terminationGracePeriodSeconds", 30))


def _as_user(uid: int | None, gid: int | None, groups: list[int]) -> list[str]:
    """The prefix that runs a command as the pod's user, with no privilege, when this test
    runs as root; as this test's own (unprivileged) user otherwise."""
    if os.geteuid() != 0 or uid is None:
        return []
    ids = [f"--reuid={uid}", f"--regid={gid if gid is not None else uid}"]
    ids.append(f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups")
    caps = [f"--inh-caps=-all,+{READ_ANYWHERE}", f"--ambient-caps=+{READ_ANYWHERE}"]
    caps.append(f"--bounding-set=-all,+{READ_ANYWHERE}")
    return ["setpriv", *ids, "--no-new-privs", *caps]


def _environment(
    spec: dict[str, Any], config_maps: dict[str, dict[str, str]], secrets: dict[str, dict[str, str]]
) -> dict[str, str]:
    """What a container's `envFrom` and `env` give it, in Kubernetes' order (`env` wins)."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
        if "secretRef" in source:
            env.update(secrets[source["secretRef"]["name"]])
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = expand(variable["value"], env)
        else:
            reference = variable["valueFrom"]
            if "secretKeyRef" in reference:
                key = reference["secretKeyRef"]
                env[variable["name"]] = secrets[key["name"]][key["key"]]
            else:
                key = reference["configMapKeyRef"]
                env[variable["name"]] = config_maps[key["name"]][key["key"]]
    return env


def plan(
    rendered: list[dict[str, Any]],
    secret: dict[str, Any],
    config_overlay: dict[str, str],
    scratch: Path,
    home: Path,
) -> list[Pod]:
    """The pods of `rendered` (one of each Deployment and Job) over the Secret `secret` and
    the ConfigMap as `config_overlay` changes it, each with a fresh /tmp under `scratch`."""
    config_maps = {
        r["metadata"]["name"]: {**r.get("data", {}), **config_overlay}
        for r in rendered
        if r["kind"] == "ConfigMap"
    }
    sources = {
        "configMaps": config_maps,
        "secrets": {secret["metadata"]["name"]: secret["stringData"]},
    }
    return [
        _pod(resource, sources, scratch, home)
        for resource in rendered
        if resource["kind"] in ("Deployment", "Job")
    ]


def _pod(
    resource: dict[str, Any],
    sources: dict[str, dict[str, dict[str, str]]],
    scratch: Path,
    home: Path,
) -> Pod:
    name = resource["metadata"]["name"]
    spec = resource["spec"]["template"]["spec"]
    context = spec.get("securityContext", {})
    tmp = scratch / f"{name}-tmp"
    tmp.mkdir()
    tmp.chmod(0o777)  # as an emptyDir is
    if os.geteuid() == 0 and "runAsUser" in context:
        os.chown(tmp, context["runAsUser"], context.get("fsGroup", -1))
    # What the container runtime and the image give every container, before the manifests'.
    base = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "HOSTNAME": f"{name}-{uuid.uuid4().hex[:5]}",
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp),
        **image_env(),
    }
    made = {
        init: [
            _container(
                c, name=name, init=init, context=context, base=base, tmp=tmp, sources=sources
            )
            for c in spec.get("initContainers" if init else "containers", [])
        ]
        for init in (True, False)
    }
    return Pod(name, resource["kind"], spec, tmp, made[True], made[False])


def _container(
    c: dict[str, Any],
    *,
    name: str,
    init: bool,
    context: dict[str, Any],
    base: dict[str, str],
    tmp: Path,
    sources: dict[str, dict[str, dict[str, str]]],
) -> Container:
    own = {**context, **c.get("securityContext", {})}
    given = _environment(c, sources["configMaps"], sources["secrets"])
    env = {**base, **{key: in_pod_tmp(value, tmp) for key, value in given.items()}}
    ports = {p.get("name", str(p["containerPort"])): p for p in c.get("ports", [])}
    standing = {str(p["containerPort"]): str(free_port()) for p in ports.values()}
    # The ports a process is told to listen on: by the env (gunicorn's PORT, the worker's
    # WORKER_METRICS_PORT) or by an option (Flower's --port).
    for key in ("PORT", "WORKER_METRICS_PORT"):
        if env.get(key) in standing:
            env[key] = standing[env[key]]
    words = [*c.get("command", []), *c.get("args", [])]
    words = [expand(in_pod_tmp(word, tmp), env) for word in words]
    words = [
        re.sub(r"^--port=(\d+)$", lambda m: f"--port={standing.get(m[1], m[1])}", word)
        for word in words
    ]
    return Container(
        pod=name,
        name=c["name"],
        init=init,
        spec=c,
        command=words,
        env=env,
        uid=own.get("runAsUser"),
        gid=own.get("runAsGroup"),
        groups=[context["fsGroup"]] if "fsGroup" in context else [],
        ports={n: int(standing[str(p["containerPort"])]) for n, p in ports.items()},
    )


def read_only_copy(destination: Path) -> Path:
    """The application as the image holds it (what .dockerignore lets in), with no write bit
    anywhere: a process that writes into it fails, as on a read-only root filesystem."""
    shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(*NOT_IN_IMAGE))
    for path in [destination, *destination.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222 | 0o444 | (0o111 if stat.S_ISDIR(mode) else 0))
    return destination


def snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `directory` with its size, modification time and mode."""
    return {
        str(path.relative_to(directory)): (info.st_size, info.st_mtime_ns, info.st_mode)
        for path in [directory, *directory.rglob("*")]
        for info in [path.lstat()]
    }


@contextmanager
def scratch_directory() -> Iterator[Path]:
    """A directory the pods' user can reach (pytest's own are root's alone), removed after."""
    path = Path(tempfile.mkdtemp(prefix="k8s-rehearsal-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for inner in path.rglob("*"):
            if inner.is_dir() and not inner.is_symlink():
                inner.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def empty_database() -> Iterator[str]:
    """A database with no table at all, as a first release finds it; dropped afterwards."""
    name = f"orders_k8s_{uuid.uuid4().hex[:10]}"
    admin = _admin_dsn(SERVER_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
