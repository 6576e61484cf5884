"""Every request gets an id: the client's `X-Request-ID` when well-formed, else a new one. It is
returned in the same header and stamped on each line the request logs (`common.logs`)."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from common.logs import operation_var, request_id_var, reset_context, subject_var

REQUEST_ID_HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


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
    reset_context()


def init_app(app: Flask) -> None:
    """Give every request an id, returned in `X-Request-ID` and stamped on its log lines."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_finish_request)
    # Teardown functions run last-registered first: this one, registered before the other
    # extensions', runs after theirs, whose lines still carry the id.
    app.teardown_request(_end_request)
