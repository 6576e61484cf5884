"""A local stand-in for Sentry's ingestion endpoint: a DSN on 127.0.0.1 that keeps every
envelope the SDK posts to it, for tests to read what would have reached Sentry."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sentry_sdk


class SentryReceiver:
    """Serves on an ephemeral port of 127.0.0.1 until `close()`; `dsn` points the SDK at it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver._lock:
                    receiver.bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self._server.server_port}/1"

    def text(self) -> str:
        """Everything received so far, as one string."""
        with self._lock:
            return b"\n".join(self.bodies).decode("utf-8", "replace")

    def events(self) -> list[dict[str, Any]]:
        """The error events among the envelopes received so far, in the order they came."""
        with self._lock:
            bodies = list(self.bodies)
        return [payload for body in bodies for kind, payload in _items(body) if kind == "event"]

    def close(self) -> None:
        """Stop reporting (the SDK's client is closed and replaced by one that records
        nothing, so later tests run as without a DSN), then stop serving."""
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
        self._server.shutdown()
        self._server.server_close()


def _items(envelope: bytes) -> list[tuple[str, Any]]:
    """(type, payload) of each item of an envelope: a header line, then per item a header line
    and its payload (of the header's `length` in bytes, or up to the next newline)."""
    _header, _, rest = envelope.partition(b"\n")
    items = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        item = json.loads(line)
        if "length" in item:
            payload, rest = rest[: item["length"]], rest[item["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((item.get("type", ""), json.loads(payload)))
        except ValueError:
            items.append((item.get("type", ""), payload))
    return items
