"""A peer that took the connection and went quiet, and a bound for calls that must not wait
on one.

`SilentServer` accepts TCP connections on 127.0.0.1, reads what is sent and never answers:
a broker or an identity provider that hangs. A client without a timeout of its own waits on
it forever, so a test need not time anything: the call returns, or it never does.
`returns(call)` runs a call that must return and fails the test if it is still waiting after
a patience far beyond any timeout of the service (a safeguard against hanging the suite,
not a measure of speed).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
PATIENCE_SECONDS = 60


class SilentServer:
    """Accepts connections and never answers; records what arrived and who hung up."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._received = threading.Condition(self._lock)
        self.bytes_received = 0
        self.hung_up = 0  # connections the client closed
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                self._connections.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        while True:
            try:
                chunk = connection.recv(65536)
            except OSError:
                return
            with self._lock:
                if not chunk:
                    self.hung_up += 1
                    self._received.notify_all()
                    return
                self.bytes_received += len(chunk)
                self._received.notify_all()

    def wait_for_a_request(self) -> None:
        """Return once a client has sent something (it now waits for the answer that never
        comes); fail the test if none does."""
        with self._lock:
            if not self._received.wait_for(lambda: self.bytes_received > 0, PATIENCE_SECONDS):
                pytest.fail("no client sent anything to the silent server")

    def wait_for_hang_up(self) -> None:
        """Return once a client has closed its connection; fail the test if none does."""
        with self._lock:
            if not self._received.wait_for(lambda: self.hung_up > 0, PATIENCE_SECONDS):
                pytest.fail("no client hung up on the silent server")

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for connection in self._connections:
                connection.close()


def returns(call: Callable[[], T], what: str = "the call") -> T:
    """`call()`'s value (or its exception); fails the test if it is still waiting after
    PATIENCE_SECONDS, as a call blocked on a silent peer would be forever."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE_SECONDS)
    if thread.is_alive():
        pytest.fail(f"{what} was still waiting after {PATIENCE_SECONDS} s: it blocks")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
