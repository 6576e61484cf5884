"""Whether an HTTP reply reached its client, judged from the TCP connection it is written to.

A WSGI server hands a reply to the kernel and moves on; HTTP never says whether the client
read it. The connection does tell, on Linux, in three places:

- Before the reply is written: a client that hung up or whose process died has closed its
  side, so the socket reads end-of-file (or was reset). Peeking for that is the main signal,
  because writing to a peer that just died still succeeds into the kernel's buffer.
- The write itself can fail (the peer's reset to an earlier write arrived first).
- After the reply is written: a socket whose process is gone answers the reply with a reset,
  and so does one closed with the reply unread in its buffer. A client that read the reply
  either sends its next request on the connection or closes it normally, having acknowledged
  every byte. `reply_reached` watches for these for a few moments (the watch).

So a client killed before the reply, between the peek and the write, or with the reply still
unread in its socket during the watch, is seen. What stays unknowable: a client that left the
reply unread in its socket for longer than the watch (its process stalled that long) and then
died; one that shut down its sending side before reading (its kernel's acknowledgement then
passes for reading: HTTP clients do not do this); and, where TCP_INFO and SIOCOUTQ are
missing, anything after the write but a reset. A client that read the reply and died before
acting on it was answered: that window is the client's own, and no server can see it.

The sockets come from the WSGI environ: werkzeug's server puts the connection in
``werkzeug.socket``, gunicorn's workers put it in ``gunicorn.socket``.
"""

from __future__ import annotations

import enum
import fcntl
import select
import socket
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# The environ key under which a view asks to be told its reply's fate: a callable taking
# True (the client took the reply) or False (it did not); only its first call counts.
SETTLE = "dev.replies.settle"
_TCP_CLOSE = 7  # TCP_CLOSE in Linux's include/net/tcp_states.h: a reset connection ends here
_SLICE = 0.05  # seconds between looks at the stop event while waiting on a quiet connection


class Peer(enum.Enum):
    """What the client end of a connection looks like from the server, right now."""

    OPEN = "open"  # connected, nothing more from it since its request
    SENDING = "sending"  # it sent more (its next request): it is alive and reading
    CLOSED = "closed"  # it closed its side: end-of-file
    RESET = "reset"  # the connection was reset


def connection_of(environ: dict[str, Any]) -> socket.socket | None:
    """The client connection of a WSGI request, when the server exposes it."""
    sock = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    return sock if isinstance(sock, socket.socket) else None


def peer_state(sock: socket.socket) -> Peer:
    """Look at the client end of `sock` without reading anything from it."""
    if _tcp_state(sock) == _TCP_CLOSE:
        return Peer.RESET
    if not _readable(sock, 0):
        return Peer.OPEN
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, TimeoutError):
        return Peer.OPEN
    except OSError:
        return Peer.RESET
    return Peer.SENDING if data else Peer.CLOSED


def wait_for_hang_up(sock: socket.socket, seconds: float, stop: threading.Event) -> bool:
    """Wait up to `seconds` (or until `stop` is set) for the client to close or reset the
    connection; True when it did. The request must have been read in full."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        state = peer_state(sock)
        if state in (Peer.CLOSED, Peer.RESET):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if state is Peer.SENDING:
            # Data waiting would wake every poll at once; a client sending is not hanging up.
            stop.wait(remaining)
            return False
        _readable(sock, min(remaining, _SLICE))
    return False


def reply_reached(sock: socket.socket, seconds: float, stop: threading.Event) -> bool:
    """After a whole reply was written to `sock`: watch the connection for up to `seconds`
    and tell whether the client took the reply (False: reset, or closed without
    acknowledging it). A client that stays connected and quiet is taken to have read it."""
    deadline = time.monotonic() + seconds
    while True:
        state = peer_state(sock)
        if state is Peer.RESET:
            return False
        if state is Peer.SENDING:
            return True
        # Closed after acknowledging every byte: it read the reply (a socket closed with
        # unread data sends a reset, not an end-of-file).
        if state is Peer.CLOSED and _unacknowledged(sock) == 0:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0 or stop.is_set():
            return state is not Peer.CLOSED
        if state is Peer.CLOSED:
            # It closed before the reply arrived: the reset (or the acknowledgement of a
            # half-closed client) follows within a round trip; end-of-file keeps poll awake.
            stop.wait(min(remaining, 0.001))
        else:
            _readable(sock, min(remaining, _SLICE))


class WatchReplies:
    """WSGI middleware: a request whose view put a callable under ``environ[SETTLE]`` gets it
    called once with whether its reply reached the client."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], watch: Callable[[], float], stop: threading.Event
    ) -> None:
        self.app = app
        self.watch = watch  # seconds to watch the connection after the reply is written
        self.stop = stop

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self.app(environ, start_response)
        settle = environ.get(SETTLE)
        if settle is None:
            return body
        return _WatchedReply(body, settle, connection_of(environ), self.watch(), self.stop)


def abandoned(environ: dict[str, Any] | None) -> None:
    """Tell a request's view that its reply did not reach the client (the server's write
    failed); nothing when its fate is already known or nobody asked."""
    settle = (environ or {}).get(SETTLE)
    if settle is not None:
        settle(False)


class _WatchedReply:
    """The reply's body, looked at around its writing. The server iterates it right before
    writing each chunk, and calls `close()` whether or not its writes succeeded."""

    def __init__(
        self,
        body: Iterable[bytes],
        settle: Callable[[bool], None],
        sock: socket.socket | None,
        watch: float,
        stop: threading.Event,
    ) -> None:
        self._body, self._settle, self._sock = body, settle, sock
        self._watch, self._stop = watch, stop

    def __iter__(self) -> Iterator[bytes]:
        # Runs on the server's first request for a chunk, just before it writes the reply.
        gone = self._sock is not None and peer_state(self._sock) in (Peer.CLOSED, Peer.RESET)
        if gone:
            self._settle(False)
        yield from self._body
        # Asked for more after the last chunk: every write succeeded.
        if not gone:
            reached = self._sock is None or reply_reached(self._sock, self._watch, self._stop)
            self._settle(reached)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            # A no-op after a verdict; otherwise the server stopped writing: a failed write.
            self._settle(False)


def _readable(sock: socket.socket, seconds: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0, round(seconds * 1000))))


def _tcp_state(sock: socket.socket) -> int | None:
    # The first byte of struct tcp_info is the connection's state.
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except (AttributeError, OSError):
        return None


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes written to `sock` that the client's kernel has not acknowledged (SIOCOUTQ);
    0 where the system cannot tell."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
    except (AttributeError, OSError):
        return 0
    return int.from_bytes(raw, sys.byteorder, signed=True)
