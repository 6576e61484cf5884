"""Structured logs: one JSON object per line on stdout, for the web process and the worker.

Each line carries the request id (from `X-Request-ID`, or made up) and, in the web process,
the GraphQL operation name and the caller's subject; the worker carries the request id of the
request that queued its notification. Phone numbers are masked and anything shaped like a
token is replaced, whatever the message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
operation_var: ContextVar[str | None] = ContextVar("operation", default=None)
subject_var: ContextVar[str | None] = ContextVar("subject", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# A JWT (three base64url segments, the first starting {"), and E.164-looking numbers.
TOKEN = re.compile(r"eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*")
PHONE = re.compile(r"(?<![\w-])(\+?\d{3})\d{4,9}(\d{3})(?!\w)")


def scrub(text: str) -> str:
    """`text` with tokens removed and phone numbers masked to their first and last digits."""
    text = TOKEN.sub("[token]", text)
    return PHONE.sub(lambda match: f"{match[1]}****{match[2]}", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("operation", operation_var),
            ("sub", subject_var),
        ):
            if (value := var.get()) is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    """Send every log record, as JSON, to stdout (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    # Per-request access lines come from gunicorn; werkzeug's would repeat them.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _start_request() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    # fullmatch: `$` alone would let an id end in a line feed.
    g.request_id = given if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request_id_var.set(g.request_id)
    operation_var.set(None)
    subject_var.set(None)


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    return response


def _end_request(_error: BaseException | None) -> None:
    # A thread serves request after request: what this one set must not label the lines the
    # thread logs before the next one starts.
    request_id_var.set(None)
    operation_var.set(None)
    subject_var.set(None)


def init_app(app: Flask) -> None:
    """Give every request an id, returned in `X-Request-ID` and stamped on its log lines."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_finish_request)
    # Teardown functions run last-registered first: this one, registered before the other
    # extensions', runs after theirs, whose lines still carry the id.
    app.teardown_request(_end_request)
