"""dev.sms_gateway's JSON admin API under ``/_admin``: how a test or benchmark in another process
reads what the gateway received, scripts outcomes, sets the latency and sends delivery reports.

A ValueError in a view answers 400 and a KeyError 404 (the gateway's app registers both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests
from flask import Blueprint, Response, jsonify, request

if TYPE_CHECKING:
    from dev.sms_gateway import FakeSmsGateway


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object body")
    return body


def admin_blueprint(gateway: FakeSmsGateway) -> Blueprint:
    """The admin endpoints of `gateway`, to register on its app."""
    admin = Blueprint("admin", __name__, url_prefix="/_admin")

    @admin.get("/messages")
    def messages() -> Response:
        return jsonify(messages=gateway.messages)

    @admin.get("/stats")
    def stats() -> Response:
        return jsonify(gateway.stats())

    @admin.get("/copies")
    def copies() -> Response:
        found = gateway.copies()
        return jsonify(
            copies=found,
            duplicates=sum(c["duplicates"] for c in found),
            unexplained=sum(c["unexplained"] for c in found),
        )

    @admin.post("/script")
    def script() -> Response:
        body = _json_body()
        phone, outcomes = body.get("phone"), body.get("outcomes")
        if not isinstance(phone, str) or not isinstance(outcomes, list):
            raise ValueError('expected {"phone": "+254...", "outcomes": [101, "http:503", ...]}')
        gateway.script(phone, *outcomes)
        return jsonify(phone=phone, queued=gateway.stats()["scripted"].get(phone.strip(), []))

    @admin.post("/latency")
    def latency() -> Response:
        gateway.latency = _json_body().get("seconds")  # type: ignore[assignment]
        return jsonify(latency=gateway.latency)

    @admin.post("/deliver")
    def deliver() -> Response:
        body = _json_body()
        names = ("message_id", "status", "failure_reason", "url", "key", "phone_number")
        kwargs = {name: body[name] for name in names if body.get(name) is not None}
        if "message_id" not in kwargs:
            raise ValueError("expected a message_id")
        try:
            return jsonify(status=gateway.deliver(**kwargs))
        except requests.RequestException as error:
            response = jsonify(error=f"callback failed: {type(error).__name__}")
            response.status_code = 502
            return response

    @admin.post("/reset")
    def reset() -> Response:
        gateway.reset()
        return jsonify(gateway.stats())

    return admin
