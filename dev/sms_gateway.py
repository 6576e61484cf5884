"""A local stand-in for Africa's Talking's SMS API, for development, tests and benchmarks only.

It answers ``POST /version1/messaging`` the way the real gateway does (form fields ``username``,
``to``, ``message``, ``from``, header ``apiKey``), records what it was sent, lets tests script
per-number outcomes (gateway statusCodes, HTTP errors, hangs, dropped connections, garbage) and
POSTs delivery reports to a callback URL. A small JSON admin API under ``/_admin`` drives it from
another process. Run it with ``python -m dev.sms_gateway`` or embed it in tests with
``FakeSmsGateway().serve_in_thread()``; gunicorn serves the instance itself.

Every message it accepts is also marked with whether its reply reached the client ("delivered")
or not ("cut": the client hung up or died mid-call), so a test that kills a sender can tell the
copies it caused by cutting a call (the sender never learnt of them) from the ones it should
not have sent (see `dev.replies` for how and for what no server can know).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from flask import Flask, Response, jsonify, request
from werkzeug import serving

from dev import (
    PathOnlyRequestHandler,
    ProductionRefusedError,
    ServerThread,
    base_url,
    refuse_production,
    replies,
)

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
# A message's `reply`: being written, reached the client, or never did.
PENDING, DELIVERED, CUT = "pending", "delivered", "cut"
_REPLIES = (PENDING, DELIVERED, CUT)

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


def network_code(phone: str) -> str:
    """The mobile network code a delivery report gives for `phone` (Kenyan prefixes only)."""
    return next(code for prefix, code in _NETWORK_CODES if phone.startswith(prefix))


def _text(status: int, body: str, mimetype: str = "text/plain") -> Response:
    return Response(body, status=status, mimetype=mimetype)


def _html_error(status: int) -> Response:
    # Shaped like the nginx page a load balancer in front of the API returns.
    title = f"{status} {HTTPStatus(status).phrase}"
    page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
    return _text(status, page + "<hr><center>nginx</center></body></html>\n", "text/html")


class RunningGateway(ServerThread):
    """A gateway served from a background thread; shutting down releases hanging requests."""

    def __init__(self, server: serving.BaseWSGIServer, *, url: str, gateway: FakeSmsGateway):
        super().__init__(
            server,
            url=url,
            name=f"fake-sms-{server.server_port}",
            before_shutdown=gateway._stopping.set,
        )
        self.gateway = gateway


class _RequestHandler(PathOnlyRequestHandler):
    # Per-request lines would swamp a benchmark, so they are opt-in (--verbose).
    verbose = False

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        # werkzeug can skip the reply's close() when its write fails; the reply was cut.
        replies.abandoned(environ)


class FakeSmsGateway:
    """An in-memory, thread-safe imitation of Africa's Talking's SMS API as a WSGI app."""

    def __init__(
        self,
        username: str = "sandbox",
        api_key: str = "test-key",
        latency: float = 0.0,
        *,
        hang: float = 30.0,
        reply_watch: float = 0.5,
        jitter: float = 0.0,
        callback_url: str | None = None,
        callback_key: str | None = None,
    ) -> None:
        refuse_production("dev.sms_gateway", "point the service at the real Africa's Talking API")
        self.username = username
        self.api_key = api_key
        self.hang = hang  # seconds a "timeout" outcome holds the request before dropping it
        # Seconds a written reply's connection is watched for a reset (see dev.replies); a
        # watch ends early once the client sends its next request or closes having read it.
        if not 0 <= reply_watch <= 3600:
            raise ValueError(f"reply_watch must be between 0 and 3600 seconds, not {reply_watch!r}")
        self.reply_watch = reply_watch
        self.jitter = jitter
        self.callback_url = callback_url
        self.callback_key = callback_key
        self._initial_latency = latency
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._in_flight = 0
        self.reset()
        self.app = self._create_app()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        """Serve WSGI requests through the Flask app."""
        return self.app(environ, start_response)

    # -- state ----------------------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds every messaging reply is delayed; settable at runtime."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        valid = isinstance(seconds, int | float) and 0 <= seconds <= 3600
        if not valid or isinstance(seconds, bool):
            raise ValueError(f"latency must be between 0 and 3600 seconds, not {seconds!r}")
        self._latency = float(seconds)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """A copy of every recipient of every JSON-answered request, in the order accepted: to,
        message, sender_id, message_id ("None" when refused), status_code, received_at (the
        request's arrival) and accepted_at (epoch seconds), reply ("pending" while the reply is
        written and watched, then "delivered" or "cut") and reply_settled_at (None while
        pending)."""
        with self._lock:
            return [dict(m) for m in self._messages]

    @property
    def requests(self) -> int:
        """How many requests reached the messaging endpoint, whatever the answer."""
        return self._requests

    def message(self, message_id: str) -> dict[str, Any]:
        """The recorded message with this id; KeyError if the gateway never issued it."""
        with self._lock:
            return dict(self._by_id[message_id])

    def script(self, phone: str, *outcomes: Outcome) -> None:
        """Queue outcomes for `phone`, used up one per request to it: a statusCode (inside a 201),
        "http:NNN", "timeout", "close" or "garbage". Unscripted numbers get 101."""
        checked = [check_outcome(outcome) for outcome in outcomes]
        with self._lock:
            self._scripts.setdefault(phone.strip(), deque()).extend(checked)

    def reset(self) -> None:
        """Forget messages, scripts and counters and restore the initial latency. Requests
        still being answered stay counted in flight until they end (a caller that gave up
        on one may have left it here)."""
        with self._lock:
            self._messages: list[dict[str, Any]] = []
            self._by_id: dict[str, dict[str, Any]] = {}
            # The accepted messages by phone and body, and by the fate of their reply, kept
            # as they change so that stats() stays cheap for a benchmark polling it.
            self._copies: dict[tuple[str, str], list[dict[str, Any]]] = {}
            self._replies = dict.fromkeys(_REPLIES, 0)
            self._scripts: dict[str, deque[Outcome]] = {}
            self._requests = 0
            self._max_in_flight = self._in_flight
            self.latency = self._initial_latency

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks: the peak of concurrent requests, the accepted
        messages by the fate of their reply ("replies": pending, delivered, cut) and the copies
        beyond the first of a body to a phone ("duplicates"; `copies` tells them apart)."""
        with self._lock:
            accepted = sum(self._replies.values())
            return {
                "requests": self._requests,
                "messages": len(self._messages),
                "accepted": accepted,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "latency": self._latency,
                "reply_watch": self.reply_watch,
                "scripted": {p: list(q) for p, q in self._scripts.items() if q},
                "replies": dict(self._replies),
                "duplicates": accepted - len(self._copies),
            }

    def copies(self) -> list[dict[str, Any]]:
        """The accepted messages grouped by phone and body, in the order first accepted: to,
        message, copies (message_id, received_at, accepted_at, reply, reply_settled_at of each,
        oldest first), duplicates (copies beyond the first), cut (copies whose reply never
        reached the client) and unexplained (copies accepted after one whose reply was
        delivered: the client knew that one was sent). Wait until no reply is pending."""
        fields = ("message_id", "received_at", "accepted_at", "reply", "reply_settled_at")
        with self._lock:
            return [
                {
                    "to": to,
                    "message": body,
                    "copies": [{name: m[name] for name in fields} for m in found],
                    "duplicates": len(found) - 1,
                    "cut": sum(m["reply"] == CUT for m in found),
                    "unexplained": sum(m["reply"] == DELIVERED for m in found[:-1]),
                }
                for (to, body), found in self._copies.items()
            ]

    # -- delivery reports -----------------------------------------------------------------------

    def deliver(
        self,
        message_id: str,
        status: str = "Success",
        failure_reason: str | None = None,
        url: str | None = None,
        key: str | None = None,
        *,
        phone_number: str | None = None,
        retry_count: int = 0,
        timeout: float = 5.0,
    ) -> int:
        """POST a delivery report form for `message_id` to `url` (default `callback_url`), with
        `key` (default `callback_key`) added as a ``key`` query parameter; return the HTTP status.

        `phone_number` is needed only for ids this gateway did not issue; failureReason is sent
        only for Failed, Rejected, AbsentSubscriber and Expired (default DeliveryFailure)."""
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"unknown delivery status {status!r}; one of {DELIVERY_STATUSES}")
        failed = status in FAILED_DELIVERY_STATUSES
        if failure_reason and not failed:
            raise ValueError(f"a {status} delivery report has no failureReason")
        url, key = url or self.callback_url, key or self.callback_key
        if not url:
            raise ValueError("no callback URL: pass url= or set callback_url")
        with self._lock:
            known = self._by_id.get(message_id)
        phone = phone_number or (known["to"] if known else None)
        if phone is None:
            raise KeyError(f"unknown message id {message_id!r}; pass phone_number=")
        form = {"id": message_id, "status": status, "phoneNumber": phone}
        form |= {"networkCode": network_code(phone), "retryCount": str(retry_count)}
        if failed:
            default = "AbsentSubscriber" if status == "AbsentSubscriber" else "DeliveryFailure"
            form["failureReason"] = failure_reason or default
        if key:
            parts = urlsplit(url)
            query = urlencode([*parse_qsl(parts.query), ("key", key)])
            url = urlunsplit(parts._replace(query=query))
        return requests.post(url, data=form, timeout=timeout).status_code

    # -- HTTP -----------------------------------------------------------------------------------

    def _create_app(self) -> Flask:
        app = Flask(__name__)
        app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the gateway's field order
        routes = [
            ("/version1/messaging", self._messaging, ["POST"]),
            ("/_admin/messages", lambda: jsonify(messages=self.messages), ["GET"]),
            ("/_admin/stats", lambda: jsonify(self.stats()), ["GET"]),
            ("/_admin/copies", self._admin_copies, ["GET"]),
            ("/_admin/script", self._admin_script, ["POST"]),
            ("/_admin/latency", self._admin_latency, ["POST"]),
            ("/_admin/deliver", self._admin_deliver, ["POST"]),
            ("/_admin/reset", self._admin_reset, ["POST"]),
        ]
        for rule, view, methods in routes:
            app.add_url_rule(rule, endpoint=rule, view_func=view, methods=methods)
        app.register_error_handler(ValueError, lambda e: (jsonify(error=str(e)), 400))
        app.register_error_handler(KeyError, lambda e: (jsonify(error=str(e.args[0])), 404))
        app.wsgi_app = replies.WatchReplies(  # type: ignore[method-assign]
            app.wsgi_app, lambda: self.reply_watch, self._stopping
        )
        return app

    def _pause(self, seconds: float) -> None:
        # An Event rather than time.sleep, so shutdown() frees requests that are still waiting.
        if seconds > 0:
            self._stopping.wait(seconds)

    def _messaging(self) -> Response:
        received_at = time.time()
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            # Read the whole request first: only then does the socket show a hang-up.
            request.get_data(parse_form_data=True)
            self._wait_latency()
            return self._answer(received_at)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _wait_latency(self) -> None:
        # A client that hangs up meanwhile ends the wait: the request is answered at once,
        # into the closed connection, as a real gateway would still take the message.
        # A real gateway's answers vary: with `jitter`, each waits latency ± up to jitter.
        latency = self._latency
        if self.jitter:
            latency = max(0.0, latency + random.uniform(-self.jitter, self.jitter))  # noqa: S311
        sock = replies.connection_of(request.environ)
        if sock is None or latency <= 0:
            self._pause(latency)
        else:
            replies.wait_for_hang_up(sock, latency, self._stopping)

    def _answer(self, received_at: float) -> Response:
        given_key = request.headers.get("apiKey", "").encode()
        key_ok = hmac.compare_digest(given_key, self.api_key.encode())
        if not key_ok or request.form.get("username") != self.username:
            return _text(401, AUTH_ERROR)
        for name in ("to", "message"):
            if not request.form.get(name):
                return _text(400, f"Request is missing required form field '{name}'")
        numbers = [n.strip() for n in request.form["to"].split(",") if n.strip()]
        with self._lock:
            outcomes = [self._next_outcome(number) for number in numbers]
        # One reply per request: the first non-statusCode outcome among the recipients wins.
        transport = next((o for o in outcomes if isinstance(o, str)), None)
        if transport is None:
            return self._accept(numbers, [int(o) for o in outcomes], received_at)
        if transport == "http:401":
            return _text(401, AUTH_ERROR)
        if transport.startswith("http:"):
            return _html_error(int(transport[5:]))
        if transport.startswith("batch:"):
            reply = {"SMSMessageData": {"Message": transport[6:], "Recipients": []}}
            return _text(201, json.dumps(reply), _JSON)
        if transport == "garbage":
            return _text(201, '{"SMSMessageData": {"Message": "Sent to 1/1 Total Co', _JSON)
        if transport == "timeout":
            self._pause(self.hang)
        return self._drop_connection()

    def _next_outcome(self, number: str) -> Outcome:
        queue = self._scripts.get(number)
        if queue:
            return queue.popleft()
        return 101 if _E164.fullmatch(number) else 403

    def _accept(self, numbers: list[str], codes: list[int], received_at: float) -> Response:
        accepted_at, form = time.time(), request.form
        recipients, records = [], []
        for number, code in zip(numbers, codes, strict=True):
            ok = code in ACCEPTED_CODES
            message_id = f"ATXid_{uuid.uuid4().hex}" if ok else "None"
            recipients.append(
                {
                    "statusCode": code,
                    "number": number,
                    "status": STATUS_NAMES[code],
                    "cost": UNIT_COST if ok else "0",
                    "messageId": message_id,
                }
            )
            records.append(
                {
                    "to": number,
                    "message": form["message"],
                    "sender_id": form.get("from") or None,
                    "message_id": message_id,
                    "status_code": code,
                    "received_at": received_at,
                    "accepted_at": accepted_at,
                    "reply": PENDING,
                    "reply_settled_at": None,
                }
            )
        with self._lock:
            self._messages.extend(records)
            for record in records:
                if record["status_code"] in ACCEPTED_CODES:
                    self._by_id[record["message_id"]] = record
                    self._copies.setdefault((record["to"], record["message"]), []).append(record)
                    self._replies[PENDING] += 1
        request.environ[replies.SETTLE] = partial(self._settle, records)
        sent = sum(code in ACCEPTED_CODES for code in codes)
        total = f"KES {0.8 * sent:.4f}" if sent else "0"
        summary = {"Message": f"Sent to {sent}/{len(numbers)} Total Cost: {total}"}
        response = jsonify(SMSMessageData={**summary, "Recipients": recipients})
        response.status_code = 201
        return response

    def _settle(self, records: list[dict[str, Any]], reached: bool) -> None:
        # The first verdict on a reply stands: a later failure cannot un-deliver it.
        verdict, settled_at = (DELIVERED if reached else CUT), time.time()
        with self._lock:
            for record in records:
                if record["reply"] != PENDING:
                    continue
                record["reply"], record["reply_settled_at"] = verdict, settled_at
                # Records from before a reset() are no longer counted.
                if self._by_id.get(record["message_id"]) is record:
                    self._replies[PENDING] -= 1
                    self._replies[verdict] += 1

    @staticmethod
    def _drop_connection() -> Response:
        # Shutting the socket makes the client see the connection close with no status line;
        # werkzeug then treats its own failed write as a dropped connection and stays quiet.
        sock = request.environ.get("werkzeug.socket")
        if sock is None:
            raise RuntimeError("'timeout' and 'close' outcomes need werkzeug's server")
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return Response(status=204)

    def _json_body(self) -> dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object body")
        return body

    def _admin_script(self) -> Response:
        body = self._json_body()
        phone, outcomes = body.get("phone"), body.get("outcomes")
        if not isinstance(phone, str) or not isinstance(outcomes, list):
            raise ValueError('expected {"phone": "+254...", "outcomes": [101, "http:503", ...]}')
        self.script(phone, *outcomes)
        return jsonify(phone=phone, queued=self.stats()["scripted"].get(phone.strip(), []))

    def _admin_latency(self) -> Response:
        self.latency = self._json_body().get("seconds")  # type: ignore[assignment]
        return jsonify(latency=self.latency)

    def _admin_deliver(self) -> Response:
        body = self._json_body()
        names = ("message_id", "status", "failure_reason", "url", "key", "phone_number")
        kwargs = {name: body[name] for name in names if body.get(name) is not None}
        if "message_id" not in kwargs:
            raise ValueError("expected a message_id")
        try:
            return jsonify(status=self.deliver(**kwargs))
        except requests.RequestException as error:
            response = jsonify(error=f"callback failed: {type(error).__name__}")
            response.status_code = 502
            return response

    def _admin_copies(self) -> Response:
        copies = self.copies()
        return jsonify(
            copies=copies,
            duplicates=sum(c["duplicates"] for c in copies),
            unexplained=sum(c["unexplained"] for c in copies),
        )

    def _admin_reset(self) -> Response:
        self.reset()
        return jsonify(self.stats())

    # -- serving --------------------------------------------------------------------------------

    def bind(self, host: str = "127.0.0.1", port: int = 0) -> serving.BaseWSGIServer:
        """Bind werkzeug's threaded server (one thread per connection) to `host`:`port`."""
        refuse_production("dev.sms_gateway", "point the service at the real Africa's Talking API")
        self._stopping.clear()
        return serving.make_server(
            host, port, self.app, threaded=True, request_handler=_RequestHandler
        )

    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> RunningGateway:
        """Serve over HTTP from a daemon thread (port 0 picks a free port)."""
        server = self.bind(host, port)
        return RunningGateway(server, url=base_url(host, server.server_port), gateway=self)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve the gateway until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m dev.sms_gateway", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument("--username", default="sandbox")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument(
        "--hang", type=float, default=30.0, help="seconds a 'timeout' outcome hangs"
    )
    parser.add_argument(
        "--reply-watch",
        type=float,
        default=0.5,
        help="seconds a written reply's connection is watched for the client's reset",
    )
    parser.add_argument("--callback-url", help="default delivery report URL for /_admin/deliver")
    parser.add_argument("--callback-key", help="default ?key= for delivery reports")
    parser.add_argument("--verbose", action="store_true", help="log every request line")
    args = parser.parse_args(argv)
    try:
        gateway = FakeSmsGateway(
            args.username,
            args.api_key,
            args.latency,
            hang=args.hang,
            reply_watch=args.reply_watch,
            callback_url=args.callback_url,
            callback_key=args.callback_key,
        )
        server = gateway.bind(args.host, args.port)
    except (ProductionRefusedError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _RequestHandler.verbose = args.verbose
    url = base_url(args.host, server.server_port)
    print(
        f"dev.sms_gateway: Africa's Talking SMS stand-in for DEVELOPMENT ONLY\n"
        f"  url:      {url}   (SDK base URL: {url}/version1)\n"
        f"  username: {gateway.username}   api key: as configured, not shown\n"
        f"  latency:  {gateway.latency}s   admin: {url}/_admin/stats",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gateway._stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
