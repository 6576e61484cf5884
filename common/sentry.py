"""Error reporting to Sentry, only when SENTRY_DSN is set.

Only bugs are reported: an unhandled exception (a 500), a resolver that raised, a task that
failed, an error logged by the web or the worker. What a client got wrong (validation,
syntax, variables, authentication, a payload's field errors) is answered to the client and
never filed: anyone could spend the quota with it. Nothing personal leaves the process: the
integrations are chosen here and told to collect no user, body, query string, GraphQL
document, variable or SQL parameter, and every event and breadcrumb is masked once more
(phone numbers, e-mail addresses, tokens, the query strings of URLs) before it is sent.
"""

from __future__ import annotations

import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.atexit import AtexitIntegration
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.integrations.excepthook import ExcepthookIntegration
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.sqlalchemy import SqlalchemyIntegration
from sentry_sdk.integrations.stdlib import StdlibIntegration
from sentry_sdk.integrations.threading import ThreadingIntegration

from common.logs import scrub
from common.settings import Settings

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# The query string of a URL or path (the delivery callback's ?key=, a token in a link).
QUERY = re.compile(r"(/[^\s?#\"'<>]*)\?[^\s#\"'<>]+")
FILTERED = "[Filtered]"
# Request headers worth seeing in a report; every other header's value is filtered.
HEADERS = ["content-type", "content-length", "user-agent", "x-request-id", "host"]

# Not the SDK's defaults: those add every integration whose library is installed, among
# them Ariadne's, which files each GraphQL error, the clients' mistakes included.
INTEGRATIONS = (
    AtexitIntegration,
    DedupeIntegration,
    ExcepthookIntegration,
    ThreadingIntegration,
    LoggingIntegration,
    StdlibIntegration,
    SqlalchemyIntegration,
    FlaskIntegration,
    CeleryIntegration,
)
DATA_COLLECTION: dict[str, Any] = {
    "user_info": False,
    "cookies": {"mode": "off"},
    "http_headers": {"request": {"mode": "allowlist", "terms": HEADERS}},
    "http_bodies": [],
    "url_query_params": {"mode": "off"},
    "graphql": {"document": False, "variables": False},
    "gen_ai": {"inputs": False, "outputs": False},
    "database_query_data": False,
    "queues": False,
    "stack_frame_variables": False,
}


def mask(text: str) -> str:
    """`text` as a report may carry it: tokens, phone numbers, e-mails and query strings out."""
    return EMAIL.sub("[email]", QUERY.sub(rf"\1?{FILTERED}", scrub(text)))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


def _scrub_event(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("query_string", "cookies", "data"):
            request.pop(key, None)
    return _masked(event)


def _scrub_breadcrumb(crumb: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    data = crumb.get("data")
    if crumb.get("category") == "query":
        # SQL: the statement shows what ran; its parameters (phones, e-mails) stay home.
        crumb.pop("data", None)
    elif isinstance(data, dict):
        for key in ("http.query", "http.fragment"):
            data.pop(key, None)
    return _masked(crumb)


def init(settings: Settings) -> bool:
    """Start reporting errors of this process (web or worker); False when no DSN is set."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.env,
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[integration() for integration in INTEGRATIONS],
        data_collection=DATA_COLLECTION,
        before_send=_scrub_event,
        before_breadcrumb=_scrub_breadcrumb,
        traces_sample_rate=0.0,
    )
    return True


def capture(error: BaseException) -> None:
    """Report an error we handled ourselves (a resolver's bug, a 500 page)."""
    sentry_sdk.capture_exception(error)
