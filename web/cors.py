"""Cross-origin requests from browser apps (Flask-Cors), by allow-list.

Only the origins CORS_ORIGINS names may call the GraphQL endpoint (and read the SDL) from a
browser; in development, with CORS_ORIGINS unset, so may any page served from this machine
(localhost, 127.0.0.1, [::1], any port). Production with CORS_ORIGINS unset allows no origin:
no response carries CORS headers, and a browser's preflight gets none either, so the browser
sends nothing. Callers authenticate with a bearer token, never a cookie, so no credentials
mode is needed.

Every answer on those paths varies on Origin, whatever the Origin was (or none): the CORS
headers depend on it, and a shared cache that keeps the SDL or a GET's answer must not serve
one origin's headers to another. A preflight (any OPTIONS there) is answered 204, with no
body and so no content type.
"""

from __future__ import annotations

import re

from flask import Flask, Response, request
from flask_cors import CORS

from common.settings import Settings

# The paths browser apps call: the endpoint and the SDL beside it.
PATHS = re.compile(r"^/graphql(/.*)?$")
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
    """Answer preflights and add CORS headers for the allowed origins (none at all when there
    is none), every answer of the API's paths varying on Origin."""
    app.after_request(_finish_answer)
    origins = allowed_origins(settings)
    if not origins:
        return
    CORS(
        app,
        resources={PATHS.pattern: {}},
        origins=origins,
        methods=["GET", "POST"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=["X-Request-ID"],
        max_age=PREFLIGHT_MAX_AGE,
        supports_credentials=False,
        # Without an Origin there is nothing to allow: never list the allowed origins.
        always_send=False,
        # Its Vary is only for some answers (none with a single origin): ours is on all.
        vary_header=False,
    )


def _finish_answer(response: Response) -> Response:
    """Vary: Origin on every answer of the API's paths; a preflight's answer without content."""
    if not PATHS.match(request.path):
        return response
    response.vary.add("Origin")
    if request.method == "OPTIONS" and response.status_code == 200:
        # Flask's automatic answer is an empty text/html page; a preflight needs no content.
        response.status_code = 204
        response.set_data(b"")
        del response.headers["Content-Type"]
    return response
