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
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
operation_var: ContextVar[str | None] = ContextVar("operation", default=None)
subject_var: ContextVar[str | None] = ContextVar("subject", default=None)

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


def reset_context() -> None:
    """Forget the request id, operation and subject: a thread serves request after request (or
    task after task), and what one set must not label the lines logged before the next."""
    request_id_var.set(None)
    operation_var.set(None)
    subject_var.set(None)


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
