"""Africa's Talking's SMS API as dev.sms_gateway speaks it: recipient status codes, the outcomes a
test may script, the replies' bodies, and the delivery report forms the gateway posts back."""

from __future__ import annotations

import json
import re
import uuid
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Response, jsonify

STATUS_NAMES = {
    100: "Processed",
    101: "Success",
    102: "Queued",
    401: "RiskHold",
    402: "InvalidSenderId",
    403: "InvalidPhoneNumber",
    404: "UnsupportedNumberType",
    405: "InsufficientBalance",
    406: "UserInBlacklist",
    407: "CouldNotRoute",
    409: "DoNotDisturbRejection",
    500: "InternalServerError",
    501: "GatewayError",
    502: "RejectedByGateway",
}
ACCEPTED_CODES = frozenset({100, 101, 102})
TRANSPORT_OUTCOMES = ("timeout", "close", "garbage")
DELIVERY_STATUSES = (
    "Success",
    "Failed",
    "Rejected",
    "Sent",
    "Submitted",
    "Buffered",
    "AbsentSubscriber",
    "Expired",
)
FAILED_DELIVERY_STATUSES = frozenset({"Failed", "Rejected", "AbsentSubscriber", "Expired"})
AUTH_ERROR = "The supplied authentication is invalid"
UNIT_COST = "KES 0.8000"
# Longest prefix first; anything unknown reports Safaricom, the common case in tests.
_NETWORK_CODES = (("+25477", "63907"), ("+25473", "63903"), ("+25475", "63903"), ("", "63902"))
_E164 = re.compile(r"\+[1-9]\d{6,14}")
# The SDK parses a 2xx body as JSON only when Content-Type is exactly this, without a charset.
_JSON = "application/json"

Outcome = int | str


def check_outcome(outcome: Any) -> Outcome:
    """Validate a scripted outcome and return it normalised (digit strings become ints)."""
    if isinstance(outcome, str) and outcome.strip().isdigit():
        outcome = int(outcome)
    if isinstance(outcome, int) and not isinstance(outcome, bool) and outcome in STATUS_NAMES:
        return outcome
    if isinstance(outcome, str):
        word = outcome.strip().lower()
        kind, _, code = word.partition(":")
        if word in TRANSPORT_OUTCOMES:
            return word
        if kind == "http" and code.isdigit() and 300 <= int(code) <= 599:
            return f"http:{int(code)}"
        if kind == "batch" and code:
            # The gateway refusing the whole request, e.g. "batch:InvalidSenderId".
            return f"batch:{outcome.strip().partition(':')[2]}"
    codes = ", ".join(map(str, STATUS_NAMES))
    raise ValueError(
        f"unknown SMS outcome {outcome!r}: expected a statusCode ({codes}), "
        "'http:NNN' (300-599), 'batch:<Message>', 'timeout', 'close' or 'garbage'"
    )


def unscripted_outcome(number: str) -> int:
    """What the gateway answers for a number nobody scripted: Success for an E.164 number."""
    return 101 if _E164.fullmatch(number) else 403


def text(status: int, body: str, mimetype: str = "text/plain") -> Response:
    """A reply with a plain body, as the gateway sends for errors."""
    return Response(body, status=status, mimetype=mimetype)


def auth_error() -> Response:
    """The gateway's answer to a wrong username or apiKey."""
    return text(401, AUTH_ERROR)


def refusal(transport: str) -> Response | None:
    """The reply of an "http:NNN", "batch:..." or "garbage" outcome; None for "timeout" and
    "close", which get no reply at all."""
    if transport == "http:401":
        return auth_error()
    if transport.startswith("http:"):
        # Shaped like the nginx page a load balancer in front of the API returns.
        status = int(transport[5:])
        title = f"{status} {HTTPStatus(status).phrase}"
        page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        return text(status, page + "<hr><center>nginx</center></body></html>\n", "text/html")
    if transport.startswith("batch:"):
        reply = {"SMSMessageData": {"Message": transport[6:], "Recipients": []}}
        return text(201, json.dumps(reply), _JSON)
    if transport == "garbage":
        return text(201, '{"SMSMessageData": {"Message": "Sent to 1/1 Total Co', _JSON)
    return None


def recipient(number: str, code: int) -> dict[str, Any]:
    """One entry of a reply's Recipients, with a fresh messageId when the code accepts it."""
    ok = code in ACCEPTED_CODES
    return {
        "statusCode": code,
        "number": number,
        "status": STATUS_NAMES[code],
        "cost": UNIT_COST if ok else "0",
        "messageId": f"ATXid_{uuid.uuid4().hex}" if ok else "None",
    }


def accepted_reply(recipients: list[dict[str, Any]]) -> Response:
    """The 201 the gateway answers a request it took, whatever each recipient's code."""
    sent = sum(r["statusCode"] in ACCEPTED_CODES for r in recipients)
    total = f"KES {0.8 * sent:.4f}" if sent else "0"
    summary = {"Message": f"Sent to {sent}/{len(recipients)} Total Cost: {total}"}
    response = jsonify(SMSMessageData={**summary, "Recipients": recipients})
    response.status_code = 201
    return response


def network_code(phone: str) -> str:
    """The mobile network code a delivery report gives for `phone` (Kenyan prefixes only)."""
    return next(code for prefix, code in _NETWORK_CODES if phone.startswith(prefix))


def check_delivery_status(status: str, failure_reason: str | None) -> None:
    """Raise ValueError unless `status` is a delivery report status that may carry
    `failure_reason` (only Failed, Rejected, AbsentSubscriber and Expired do)."""
    if status not in DELIVERY_STATUSES:
        raise ValueError(f"unknown delivery status {status!r}; one of {DELIVERY_STATUSES}")
    if failure_reason and status not in FAILED_DELIVERY_STATUSES:
        raise ValueError(f"a {status} delivery report has no failureReason")


def delivery_report(
    message_id: str, status: str, phone: str, failure_reason: str | None, retry_count: int
) -> dict[str, str]:
    """The form Africa's Talking posts to a delivery report callback, for a status that passed
    `check_delivery_status`; a failed one says why (default DeliveryFailure)."""
    form = {"id": message_id, "status": status, "phoneNumber": phone}
    form |= {"networkCode": network_code(phone), "retryCount": str(retry_count)}
    if status in FAILED_DELIVERY_STATUSES:
        default = "AbsentSubscriber" if status == "AbsentSubscriber" else "DeliveryFailure"
        form["failureReason"] = failure_reason or default
    return form


def with_key(url: str, key: str | None) -> str:
    """`url` with `key` added as its ``key`` query parameter, as the callback expects."""
    if not key:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode([*parse_qsl(parts.query), ("key", key)])))
