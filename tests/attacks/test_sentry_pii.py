# ruff: noqa: F811 - pytest fixtures imported from tests.sms_support are used by name
"""Attack: personal data reaching Sentry, and strangers spending its quota.

The service in production mode reports to a local stand-in for Sentry. Requests carry phone
numbers, e-mail addresses, tokens, a password and secrets in variables, headers, query
strings, form fields and SQL; every kind of client error is provoked, then one real bug. Only
the bug may arrive, and nothing personal or secret anywhere in what arrived. The Celery
worker, in production mode too, reports the same way.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sentry_sdk
from flask import Flask
from sqlalchemy import text

from dev.sms_gateway import FakeSmsGateway
from models.db import db
from tests.clients import GraphQLClient
from tests.conftest import CLIENT_SECRET
from tests.sentry_receiver import SentryReceiver
from tests.sms_support import (  # noqa: F401 - fixtures, used by name
    DELIVERY_PATH,
    WorkerProcess,
    committed_sms,
    wait_for,
    worker_env,
)

# What must never reach Sentry, in any spelling the service writes it.
PHONE = "+254722913864"
PHONE_DIGITS = "722913864"  # in +254..., 254..., 0722... alike
EMAIL = "wanjiru.kamau@example.co.ke"
PASSWORD = "pw-" + secrets.token_urlsafe(12)
CALLBACK_SECRET = secrets.token_urlsafe(24)
METRICS_TOKEN = secrets.token_urlsafe(32)
PRODUCTION = {
    "env": "production",
    "secret_key": secrets.token_urlsafe(48),
    "at_callback_secret": CALLBACK_SECRET,
    "metrics_token": METRICS_TOKEN,
}

CREATE_CUSTOMER = """
mutation($input: CreateCustomerInput!) {
  createCustomer(input: $input) { success fieldErrors { field code } customer { id } }
}
"""
BY_CODE = "query($code: String!) { customerByCode(code: $code) { id name } }"


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    running = SentryReceiver()
    yield running
    running.close()


@pytest.fixture
def reporting_app(make_app, receiver: SentryReceiver, committed_sms) -> Flask:
    """The service in production mode, reporting to the receiver; with one route of this
    test's that has a bug: it runs SQL with personal data and fails."""
    app = make_app(sentry_dsn=receiver.dsn, **PRODUCTION)
    issuer = app.config["SETTINGS"].oidc_issuer

    @app.get("/_test/bug")
    def bug() -> str:
        logging.getLogger("tests.bug").info("texting %s at %s", PHONE, EMAIL)
        requests.get(
            f"{issuer}/.well-known/openid-configuration",
            params={"key": CALLBACK_SECRET, "phone": PHONE},
            timeout=5,
        )
        db.session.execute(text("SELECT :phone, :email"), {"phone": PHONE, "email": EMAIL})
        db.session.execute(text("SELECT CAST(:email AS integer)"), {"email": EMAIL})
        return "unreachable"

    return app


def secrets_of(token: str) -> list[str]:
    """Substrings whose presence anywhere in a report would be a leak."""
    return [PHONE_DIGITS, EMAIL, "wanjiru.kamau", PASSWORD, CALLBACK_SECRET, METRICS_TOKEN] + [
        segment for segment in token.split(".") if len(segment) > 8
    ]


def client_errors(app: Flask, idp: Any, token: str) -> list[tuple[str, int]]:
    """Every kind of client mistake, each carrying personal data; (what, status) of each."""
    admin = GraphQLClient(app.test_client(), idp.issue_access_token("admin"))
    caller = GraphQLClient(app.test_client(), token)
    anonymous = GraphQLClient(app.test_client(), None)
    expired = idp.issue_access_token("jane", exp=1_000_000_000, email=EMAIL, phone_number=PHONE)
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    http = app.test_client()
    answers = {
        "a customer with a bad phone and e-mail (payload field errors)": admin.post(
            CREATE_CUSTOMER,
            {"input": {"name": "W. Kamau", "phone": PHONE + "99", "email": "wanjiru.kamau@"}},
        ),
        "a validation error": caller.post(
            "query($code: String!) { customerByCode(code: $code) { id nosuchField } }",
            {"code": PHONE},
        ),
        "a syntax error": caller.post(f'{{ customerByCode(code: "{PHONE} {EMAIL}") {{ id '),
        "a variable of the wrong type": caller.post(
            "query($first: Int) { allCustomers(first: $first) { id } }", {"first": PHONE}
        ),
        "a price that is no number": caller.post(
            "mutation($price: Decimal!) { createOrder(input: {price: $price}) { success } }",
            {"price": EMAIL},
        ),
        "no token": anonymous.post(BY_CODE, {"code": PHONE}),
        "an expired token": http.post(
            "/graphql",
            json={"query": BY_CODE, "variables": {"code": PHONE}},
            headers={"Authorization": f"Bearer {expired}"},
        ),
        "a forged token": http.post(
            "/graphql",
            json={"query": BY_CODE, "variables": {"code": EMAIL}},
            headers={"Authorization": f"Bearer {forged}"},
        ),
        "an admin's list, as a customer": caller.post(
            "query($first: Int) { notifications(first: $first) { nodes { id } } }",
            {"first": 5},
        ),
        "a wrong password": anonymous.post(
            "mutation($input: LoginInput!) { login(input: $input) { success message } }",
            {"input": {"username": "jane", "password": PASSWORD}},
        ),
        "a body that is not JSON": http.post(
            "/graphql", data=f"{{{PHONE}", content_type="application/json"
        ),
        "a batch": http.post("/graphql", json=[{"query": BY_CODE, "variables": {"code": PHONE}}]),
        "a body too large": http.post(
            "/graphql", json={"query": BY_CODE, "variables": {"code": PHONE * 10_000}}
        ),
        "GraphiQL in production": http.get(f"/graphql?phone={PHONE}"),
        "an unknown path": http.get(f"/customers/{PHONE}?email={EMAIL}"),
        "a delivery report with a wrong key": http.post(
            f"{DELIVERY_PATH}?key=wrong-{CALLBACK_SECRET[:6]}",
            data={"id": "ATXid_1", "status": "Success", "phoneNumber": PHONE},
        ),
        "a delivery report for an unknown message": http.post(
            f"{DELIVERY_PATH}?key={CALLBACK_SECRET}",
            data={"id": f"ATXid_{PHONE}", "status": "Success", "phoneNumber": PHONE},
        ),
        "metrics with a wrong token": http.get(
            "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN[:-1]}x"}
        ),
        "metrics with the right token": http.get(
            "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        ),
    }
    return [(what, response.status_code) for what, response in answers.items()]


def test_client_errors_never_reach_sentry_and_a_bug_arrives_without_personal_data(
    reporting_app, receiver, idp
):
    token = idp.issue_access_token(
        "jane", sub=str(uuid.uuid4()), email=EMAIL, phone_number=PHONE, name="Wanjiru Kamau"
    )
    caller = GraphQLClient(reporting_app.test_client(), token)
    # Served normally: the caller becomes a customer with this phone and e-mail (SQL with
    # both as parameters), and a customer is created with them.
    assert caller.execute("{ me { phone email } }")["me"] == {"phone": PHONE, "email": EMAIL}
    created = GraphQLClient(reporting_app.test_client(), idp.issue_access_token("admin")).execute(
        CREATE_CUSTOMER, {"input": {"name": "W. K.", "phone": "0722913864", "email": EMAIL}}
    )
    assert created["createCustomer"]["success"] is True

    answered = client_errors(reporting_app, idp, token)
    assert [what for what, status in answered if status >= 500] == []

    response = reporting_app.test_client().get(
        f"/_test/bug?phone={PHONE}&key={CALLBACK_SECRET}",
        headers={"Authorization": f"Bearer {token}", "X-Customer-Email": EMAIL},
    )
    assert response.status_code == 500
    sentry_sdk.flush(timeout=10)

    # Only the bug was reported: none of the client errors before it.
    [event] = receiver.events()
    assert event["exception"]["values"][-1]["type"] == "DataError"
    assert event["request"]["url"].endswith("/_test/bug")
    # Still a useful report: what ran, what was logged and called, with the data masked.
    crumbs = event["breadcrumbs"]["values"]
    queries = [crumb for crumb in crumbs if crumb.get("category") == "query"]
    assert any("CAST(" in crumb["message"] for crumb in queries)
    assert all("data" not in crumb for crumb in queries)
    assert any(
        crumb.get("category") == "tests.bug"
        and crumb["message"] == "texting +254****864 at [email]"
        for crumb in crumbs
    )
    [call] = [
        crumb for crumb in crumbs if "openid-configuration" in crumb.get("data", {}).get("url", "")
    ]
    assert call["data"]["url"].endswith("/.well-known/openid-configuration")
    assert "http.query" not in call["data"]
    received = receiver.text()
    assert [secret for secret in secrets_of(token) if secret in received] == []


# -- the worker ----------------------------------------------------------------------------


@pytest.fixture
def production_worker(database_url, idp, receiver, settings, committed_sms):
    """A real worker in production mode that reports to the receiver and sends through a
    gateway of its own, which answers "InsufficientBalance" for PHONE: an operator's problem,
    logged as an error, so reported."""
    api_key = secrets.token_urlsafe(24)
    gateway = FakeSmsGateway(username="sandbox", api_key=api_key)
    server = gateway.serve_in_thread("127.0.0.1", 0)
    gateway.script(PHONE, *[405] * 8)
    env = worker_env(database_url, server.url, settings.celery_queue)
    env.update(
        APP_ENV="production",
        # The same Redis database: production refuses the development default's spelling.
        REDIS_URL=env["REDIS_URL"].removesuffix("/0"),
        AT_API_KEY=api_key,
        SECRET_KEY=PRODUCTION["secret_key"],
        OIDC_ISSUER=idp.issuer,
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        AT_CALLBACK_SECRET=CALLBACK_SECRET,
        FLOWER_BASIC_AUTH=f"ops:{secrets.token_urlsafe(24)}",
        SENTRY_DSN=receiver.dsn,
    )
    worker = WorkerProcess(env)
    worker.start()
    yield gateway
    worker.stop()
    server.shutdown()


def test_the_worker_reports_an_operator_error_without_personal_data(
    production_worker, make_app, receiver, idp
):
    app = make_app()  # the web side, publishing to the worker's queue
    token = idp.issue_access_token("jane", sub=str(uuid.uuid4()), email=EMAIL, phone_number=PHONE)
    placed = GraphQLClient(app.test_client(), token).execute(
        "mutation { createOrder(input: {price: 1200}) { success } }"
    )
    assert placed["createOrder"]["success"] is True

    def reported() -> list[dict[str, Any]]:
        """the worker's report of the gateway's refusal"""
        return [
            event
            for event in receiver.events()
            if "needs an operator" in event.get("logentry", {}).get("formatted", "")
        ]

    [event, *_] = wait_for(reported)
    # The gateway got the message, for this phone, and refused it.
    assert {(m["to"], m["status_code"]) for m in production_worker.messages} == {(PHONE, 405)}
    crumbs = event["breadcrumbs"]["values"]
    assert any("notification_attempts" in crumb.get("message", "") for crumb in crumbs)
    received = receiver.text()
    assert [secret for secret in secrets_of(token) if secret in received] == []
