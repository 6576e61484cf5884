"""Error reporting to Sentry, only when SENTRY_DSN is set."""

from __future__ import annotations

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.flask import FlaskIntegration

from web.config import Settings
from web.logs import scrub


def _scrub_event(event: dict, _hint: dict) -> dict:
    # Messages may quote phone numbers or tokens; they go out masked, as in our logs.
    for entry in event.get("exception", {}).get("values", []):
        if isinstance(entry.get("value"), str):
            entry["value"] = scrub(entry["value"])
    if isinstance(event.get("message"), str):
        event["message"] = scrub(event["message"])
    return event


def init(settings: Settings) -> bool:
    """Start reporting errors of this process (web or worker); False when no DSN is set."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.env,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        # No user data, no request bodies (passwords), no local variables (tokens).
        data_collection={"user_info": False, "http_bodies": [], "stack_frame_variables": False},
        before_send=_scrub_event,
        traces_sample_rate=0.0,
    )
    return True


def capture(error: BaseException) -> None:
    """Report an error we handled ourselves (a resolver's bug, a 500 page)."""
    sentry_sdk.capture_exception(error)
