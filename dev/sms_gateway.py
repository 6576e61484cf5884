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
not have sent (see `dev.replies` for how and for what no server can know). What it answers is
in `dev.sms_protocol`, what it records in `dev.sms_ledger`.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import random
import socket
import sys
import threading
import time
from functools import partial
from typing import Any

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
    sms_protocol,
)
from dev.sms_admin import admin_blueprint
from dev.sms_ledger import PENDING, Ledger
from dev.sms_protocol import Outcome


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
        self._stopping = threading.Event()
        self._ledger = Ledger()
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
        return self._ledger.messages()

    @property
    def requests(self) -> int:
        """How many requests reached the messaging endpoint, whatever the answer."""
        return self._ledger.requests

    def message(self, message_id: str) -> dict[str, Any]:
        """The recorded message with this id; KeyError if the gateway never issued it."""
        return self._ledger.message(message_id)

    def script(self, phone: str, *outcomes: Outcome) -> None:
        """Queue outcomes for `phone`, used up one per request to it: a statusCode (inside a 201),
        "http:NNN", "timeout", "close" or "garbage". Unscripted numbers get 101."""
        self._ledger.script(phone, *outcomes)

    def reset(self) -> None:
        """Forget messages, scripts and counters and restore the initial latency. Requests
        still being answered stay counted in flight until they end (a caller that gave up
        on one may have left it here)."""
        self._ledger.reset()
        self.latency = self._initial_latency

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks: the peak of concurrent requests, the accepted
        messages by the fate of their reply ("replies": pending, delivered, cut) and the copies
        beyond the first of a body to a phone ("duplicates"; `copies` tells them apart)."""
        return {**self._ledger.stats(), "latency": self._latency, "reply_watch": self.reply_watch}

    def copies(self) -> list[dict[str, Any]]:
        """The accepted messages grouped by phone and body, in the order first accepted: to,
        message, copies (message_id, received_at, accepted_at, reply, reply_settled_at of each,
        oldest first), duplicates (copies beyond the first), cut (copies whose reply never
        reached the client) and unexplained (copies accepted after one whose reply was
        delivered: the client knew that one was sent). Wait until no reply is pending."""
        return self._ledger.copies()

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
        sms_protocol.check_delivery_status(status, failure_reason)
        url, key = url or self.callback_url, key or self.callback_key
        if not url:
            raise ValueError("no callback URL: pass url= or set callback_url")
        phone = phone_number or self._ledger.phone_of(message_id)
        if phone is None:
            raise KeyError(f"unknown message id {message_id!r}; pass phone_number=")
        form = sms_protocol.delivery_report(message_id, status, phone, failure_reason, retry_count)
        return requests.post(
            sms_protocol.with_key(url, key), data=form, timeout=timeout
        ).status_code

    # -- HTTP -----------------------------------------------------------------------------------

    def _create_app(self) -> Flask:
        app = Flask(__name__)
        app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the gateway's field order
        app.add_url_rule("/version1/messaging", view_func=self._messaging, methods=["POST"])
        app.register_blueprint(admin_blueprint(self))
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
        self._ledger.request_started()
        try:
            # Read the whole request first: only then does the socket show a hang-up.
            request.get_data(parse_form_data=True)
            self._wait_latency()
            return self._answer(received_at)
        finally:
            self._ledger.request_ended()

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
            return sms_protocol.auth_error()
        for name in ("to", "message"):
            if not request.form.get(name):
                return sms_protocol.text(400, f"Request is missing required form field '{name}'")
        numbers = [n.strip() for n in request.form["to"].split(",") if n.strip()]
        outcomes = self._ledger.next_outcomes(numbers)
        # One reply per request: the first non-statusCode outcome among the recipients wins.
        transport = next((o for o in outcomes if isinstance(o, str)), None)
        if transport is None:
            return self._accept(numbers, [int(o) for o in outcomes], received_at)
        if refusal := sms_protocol.refusal(transport):
            return refusal
        if transport == "timeout":
            self._pause(self.hang)
        return self._drop_connection()

    def _accept(self, numbers: list[str], codes: list[int], received_at: float) -> Response:
        accepted_at, form = time.time(), request.form
        recipients = [
            sms_protocol.recipient(n, code) for n, code in zip(numbers, codes, strict=True)
        ]
        records = [
            {
                "to": entry["number"],
                "message": form["message"],
                "sender_id": form.get("from") or None,
                "message_id": entry["messageId"],
                "status_code": entry["statusCode"],
                "received_at": received_at,
                "accepted_at": accepted_at,
                "reply": PENDING,
                "reply_settled_at": None,
            }
            for entry in recipients
        ]
        self._ledger.record(records)
        # dev.replies calls this once it knows whether the reply reached the client.
        request.environ[replies.SETTLE] = partial(self._ledger.settle, records)
        return sms_protocol.accepted_reply(recipients)

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
