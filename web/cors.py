"""Cross-origin requests from browser apps (Flask-Cors), by allow-list.

Only the origins CORS_ORIGINS names may call the GraphQL endpoint (and read the SDL) from a
browser; in development, with CORS_ORIGINS unset, so may any page served from this machine
(localhost, 127.0.0.1, [::1], any port). Production with CORS_ORIGINS unset allows no origin:
no response carries CORS headers, and a browser's preflight gets none either, so the browser
sends nothing. Callers authenticate with a bearer token, never a cookie, so no credentials
mode is needed.
"""

from __future__ import annotations

import re

from flask import Flask
from flask_cors import CORS

from web.config import Settings

LOCAL_ORIGINS = re.compile(r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$")
# What a GraphQL client sends besides the CORS-safelisted headers: its token, its JSON body's
# type, a request id to follow in the logs, and the client name and version Apollo's clients
# send when configured with them.
ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-Request-ID",
    "apollographql-client-name",
    "apollographql-client-version",
]
# How long a browser may reuse a preflight's answer.
PREFLIGHT_MAX_AGE = 600


def allowed_origins(settings: Settings) -> list[str | re.Pattern[str]]:
    if settings.cors_origins is not None:
        return list(settings.cors_origins)
    return [] if settings.is_production else [LOCAL_ORIGINS]


def init_app(app: Flask, settings: Settings) -> None:
    """Answer preflights and add CORS headers for the allowed origins; nothing at all when
    there is none."""
    origins = allowed_origins(settings)
    if not origins:
        return
    CORS(
        app,
        resources={r"/graphql(/.*)?$": {}},
        origins=origins,
        methods=["GET", "POST"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=["X-Request-ID"],
        max_age=PREFLIGHT_MAX_AGE,
        supports_credentials=False,
        # Without an Origin there is nothing to allow: never list the allowed origins.
        always_send=False,
        vary_header=True,
    )
