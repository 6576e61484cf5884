"""docker-compose.yml as `docker compose up` and `docker compose --profile dev up` run it.

Debian's docker-compose 1.29 (`make tools`) validates and resolves the file without a Docker
engine; the tests read what it resolved: which services each profile runs, what they mount,
publish and are told. The production stack imports a realm without users, publishes on
127.0.0.1 alone, and gives the browser and the API one Keycloak URL, so the issuer a browser's
token carries is the one the API checks. The dev profile adds the demo users and the local SMS
gateway.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
REALM = json.loads((ROOT / "deploy" / "keycloak" / "realm-export.json").read_text())
SECRETS = {
    "SECRET_KEY": "k" * 40,
    "OIDC_CLIENT_SECRET": "oidc-secret-for-validation",
    "AT_API_KEY": "at-key-for-validation",
    "AT_CALLBACK_SECRET": "callback-secret-for-validation",
    "FLOWER_BASIC_AUTH": "ops:flower-password-for-validation",
    "KEYCLOAK_ADMIN_PASSWORD": "keycloak-password-for-validation",
}
# What the compose file reads besides the secrets: none of it may leak in from this shell.
KNOBS = ("BIND_ADDRESS", "FLOWER_BIND_ADDRESS", "KEYCLOAK_HOSTNAME", "AT_API_URL", "COMPOSE_")
APP_SERVICES = ("release", "web", "worker", "beat", "flower")
KEYCLOAK_IMPORT = "/opt/keycloak/data/import"
DEV_GATEWAY_URL = "http://sms-gateway:8090"


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is needed to validate docker-compose.yml (`make tools`)"
    base = {
        name: value
        for name, value in os.environ.items()
        if name not in SECRETS and not name.startswith(KNOBS)
    }
    return subprocess.run(
        [found, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**base, **SECRETS, **env},
        timeout=60,
    )


def stack(*profiles: str, **env: str) -> dict[str, dict[str, Any]]:
    """The services `docker compose [--profile P] up` starts, as compose resolved them."""
    options = [part for profile in profiles for part in ("--profile", profile)]
    result = compose(*options, "config", **env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    # docker-compose 1.29 prints every service; those of a profile run only with it.
    return {
        name: service
        for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port; a port without an
    address listens on every interface."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", "0.0.0.0"), port["published"], port["target"]))  # noqa: S104
        else:
            address, host, container = port.split("/")[0].rsplit(":", 2)
            found.append((address, int(host), int(container)))
    return found


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = (
            (volume["source"], volume["target"])
            if isinstance(volume, dict)
            else volume.split(":")[:2]
        )
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def users_with_passwords(services: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """The users that a JSON file mounted into a service creates with a password (a realm
    export or a partial import): file -> usernames."""
    found: dict[str, set[str]] = {}
    for service in services.values():
        for source in bind_mounts(service).values():
            for path in [source] if source.is_file() else sorted(source.rglob("*.json")):
                users = json.loads(path.read_text()).get("users", [])
                named = {
                    user["username"]
                    for user in users
                    if any(c.get("type") == "password" for c in user.get("credentials", []))
                }
                if named:
                    found[str(path.relative_to(ROOT))] = named
    return found


# -- the file validates ----------------------------------------------------------------------


@pytest.mark.parametrize("profiles", [(), ("dev",)], ids=["default", "dev"])
def test_the_compose_file_validates(profiles):
    options = [part for profile in profiles for part in ("--profile", profile)]
    result = compose(*options, "config", "--quiet")

    assert result.returncode == 0, result.stderr


def test_the_dev_profile_adds_the_demo_users_and_the_sms_gateway():
    production, development = stack(), stack("dev")

    assert set(development) - set(production) == {"keycloak-demo-users", "sms-gateway"}
    assert set(production) >= {"postgres", "redis", "keycloak", "keycloak-db", *APP_SERVICES}
    for name in APP_SERVICES:
        assert development[name]["environment"]["APP_ENV"] == "production"


# -- no published password, no port on every interface ---------------------------------------


def test_production_imports_no_user_with_a_published_password():
    production, development = stack(), stack("dev")
    imported = bind_mounts(production["keycloak"])[KEYCLOAK_IMPORT]

    # The realm file is what Keycloak imports, and the checker reads it.
    assert (imported / "realm-export.json").is_file()
    assert users_with_passwords(production) == {}
    assert "users" not in REALM
    assert {role["name"] for role in REALM["roles"]["realm"]} >= {"admin", "customer"}
    # The check finds the demo users where they are: in the dev profile only.
    assert users_with_passwords(development) == {"dev/keycloak/demo-users.json": {"admin", "jane"}}


def test_the_demo_admin_has_the_admin_role():
    demo = json.loads((ROOT / "dev" / "keycloak" / "demo-users.json").read_text())
    users = {user["username"]: user for user in demo["users"]}

    assert demo["ifResourceExists"] == "SKIP"  # a restart keeps what was changed since
    assert "admin" in users["admin"]["realmRoles"]
    assert users["admin"]["clientRoles"] == {"customer_api": ["admin"]}
    assert "admin" not in users["jane"]["realmRoles"]
    assert users["admin"]["credentials"][0]["value"] == "admin"


@pytest.mark.parametrize("profiles", [(), ("dev",)], ids=["default", "dev"])
def test_no_port_is_published_on_every_interface(profiles):
    ports = {name: published(service) for name, service in stack(*profiles).items()}

    assert {address for found in ports.values() for address, _, _ in found} == {"127.0.0.1"}
    assert {name for name, found in ports.items() if found} >= {"web", "keycloak", "flower"}


def test_bind_address_publishes_web_and_keycloak_elsewhere():
    everywhere = stack("dev", BIND_ADDRESS="0.0.0.0")  # noqa: S104
    addresses = {name: {p[0] for p in published(s)} for name, s in everywhere.items()}

    assert addresses["web"] == addresses["keycloak"] == {"0.0.0.0"}  # noqa: S104
    # Flower and the dev gateway's admin API stay on this machine unless asked.
    assert addresses["flower"] == addresses["sms-gateway"] == {"127.0.0.1"}
    flower = stack(FLOWER_BIND_ADDRESS="10.0.0.5")["flower"]
    assert published(flower) == [("10.0.0.5", 5555, 5555)]


# -- one issuer for the browser and the API --------------------------------------------------


@pytest.mark.parametrize("hostname", [None, "sso.example.test"], ids=["default", "configured"])
def test_the_browser_and_the_api_see_the_same_issuer(hostname):
    services = stack("dev", **({"KEYCLOAK_HOSTNAME": hostname} if hostname else {}))
    keycloak = services["keycloak"]
    frontend = keycloak["environment"]["KC_HOSTNAME"]
    url = urlsplit(frontend)
    aliases = keycloak["networks"]["default"]["aliases"]

    assert url.hostname == (hostname or "keycloak.localhost")
    # Browsers resolve *.localhost to this machine (RFC 6761), where the port is published.
    assert hostname or url.hostname.endswith(".localhost")
    for name in APP_SERVICES:
        assert services[name]["environment"]["OIDC_ISSUER"] == f"{frontend}/realms/{REALM['realm']}"
        # No network of their own: the app's containers are on the alias's network.
        assert "networks" not in services[name]
    # Inside the network the same name reaches Keycloak, on the same port as outside.
    assert url.hostname in aliases
    assert (url.port, 8080) in [(host, container) for _, host, container in published(keycloak)]
    assert services["keycloak-demo-users"]["environment"]["KEYCLOAK_URL"] == frontend


def test_keycloak_keeps_its_data_in_a_volume():
    result = compose("config")
    config = yaml.safe_load(result.stdout)
    keycloak = config["services"]["keycloak"]
    database = urlsplit(keycloak["environment"]["KC_DB_URL"].removeprefix("jdbc:"))
    volumes = config["services"][database.hostname]["volumes"]

    assert keycloak["environment"]["KC_DB"] == "postgres"
    assert keycloak["command"][0] == "start"  # production mode, not start-dev
    assert "keycloak-data:/var/lib/postgresql/data:rw" in volumes
    assert "keycloak-data" in config["volumes"]


# -- browser apps sign in with the realm's public client -------------------------------------


def public_client() -> dict[str, Any]:
    [client] = [c for c in REALM["clients"] if c.get("publicClient")]
    return client


def test_the_realm_has_a_public_client_with_pkce_for_browser_apps():
    client = public_client()
    audiences = {
        m["config"]["included.client.audience"]
        for m in client["protocolMappers"]
        if m["protocolMapper"] == "oidc-audience-mapper"
    }

    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    assert client["standardFlowEnabled"] is True
    assert client["implicitFlowEnabled"] is False
    assert client["directAccessGrantsEnabled"] is False
    assert "secret" not in client
    assert client["redirectUris"]
    for uri in client["redirectUris"]:
        assert re.fullmatch(r"http://(localhost|127\.0\.0\.1):\d+/\*", uri), uri
    # The token endpoint answers the redirect URIs' origins (CORS), and no others.
    assert client["webOrigins"] == ["+"]
    assert audiences == {"customer_api"}
    for name, service in stack().items():
        if name in APP_SERVICES:
            parties = service["environment"]["OIDC_AUTHORIZED_PARTIES"].split(",")
            assert client["clientId"] in parties


def test_a_token_of_the_browser_client_is_accepted_by_the_api_as_compose_configures_it(
    make_app, idp, committed
):
    client = public_client()
    environment = stack()["web"]["environment"]
    api = make_app(
        oidc_client_id=environment["OIDC_CLIENT_ID"],
        oidc_authorized_parties=tuple(environment["OIDC_AUTHORIZED_PARTIES"].split(",")),
    ).test_client()

    def me(azp: str) -> Any:
        # As Keycloak mints it for the client: the audience mapper adds customer_api.
        token = idp.issue_access_token("jane", azp=azp, aud=["customer_api", "account"])
        headers = {"Authorization": f"Bearer {token}"}
        return api.post("/graphql", json={"query": "{ me { id } }"}, headers=headers)

    accepted = me(client["clientId"])
    assert accepted.status_code == 200, accepted.text
    assert accepted.get_json() == {"data": {"me": {"id": "2c95d280-3560-4991-af5d-d592b6982eb4"}}}
    assert me("account-console").status_code == 401


# -- the dev profile's SMS gateway -----------------------------------------------------------


def test_the_dev_gateway_takes_what_the_worker_sends():
    services = stack("dev", AT_API_URL=DEV_GATEWAY_URL)
    gateway, worker, web = services["sms-gateway"], services["worker"], services["web"]
    # compose prints `$$` for the `$` the container's shell gets.
    command = shlex.split(gateway["command"][-1].replace("$$", "$"))
    options = dict(zip(command[4::2], command[5::2], strict=True))
    env = gateway["environment"]

    assert command[:4] == ["exec", "python", "-m", "dev.sms_gateway"]
    # The image says production, which the gateway refuses.
    assert env["APP_ENV"] == "development"
    assert worker["environment"]["AT_API_URL"] == DEV_GATEWAY_URL
    url = urlsplit(DEV_GATEWAY_URL)
    assert url.hostname == "sms-gateway"
    assert options["--port"] == str(url.port)
    assert (options["--username"], options["--api-key"]) == ("$AT_USERNAME", "$AT_API_KEY")
    assert (env["AT_USERNAME"], env["AT_API_KEY"]) == (
        worker["environment"]["AT_USERNAME"],
        worker["environment"]["AT_API_KEY"],
    )
    callback = urlsplit(options["--callback-url"])
    assert (callback.hostname, callback.port) == ("web", int(web["environment"]["PORT"]))
    assert callback.path == "/callbacks/africastalking/delivery"
    assert options["--callback-key"] == "$AT_CALLBACK_SECRET"
    assert env["AT_CALLBACK_SECRET"] == web["environment"]["AT_CALLBACK_SECRET"]


def test_a_stopping_worker_has_the_time_to_finish_its_sends():
    """`docker compose stop` (or down, or a new image) sends SIGTERM, then SIGKILL after the
    grace period: a send in flight needs the connect timeout, SMS_TIMEOUT and its recording."""
    worker = stack()["worker"]
    grace = worker.get("stop_grace_period", "10s")  # Docker's default
    seconds = int(re.fullmatch(r"(\d+)s", grace)[1])
    sms_timeout = Settings.from_env({}).sms_timeout

    assert seconds >= 3.05 + sms_timeout + 10, grace
