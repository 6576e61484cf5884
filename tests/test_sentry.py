"""Sentry reports go out only when SENTRY_DSN is set, masked like our logs."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk

from web import sentry


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []  # noqa: RUF012 - one receiver per test run

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).bodies.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://public@127.0.0.1:{server.server_port}/1"
    sentry_sdk.get_client().close()
    sentry_sdk.init(dsn=None)
    server.shutdown()
    server.server_close()


def test_without_a_dsn_nothing_is_set_up(settings):
    assert sentry.init(replace(settings, sentry_dsn=None)) is False


def test_a_captured_error_reaches_sentry_with_phone_numbers_masked(settings, receiver):
    assert sentry.init(replace(settings, sentry_dsn=receiver)) is True

    sentry.capture(RuntimeError("could not text +254712345678"))
    sentry_sdk.flush(timeout=5)

    assert _Receiver.bodies, "nothing was sent to the Sentry endpoint"
    sent = b"".join(_Receiver.bodies).decode()
    assert "could not text +254****678" in sent
    assert "+254712345678" not in sent
