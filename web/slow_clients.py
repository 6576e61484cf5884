"""Clients too slow to send their request: each gets HEADERS_SECONDS for its headers and then
BODY_SECONDS for its body, or is cut off (a body too slow is answered 408).

gunicorn's threaded worker gives each request one of its threads, which waits on the socket
for as long as the client takes. A client sending its request a byte at a time (slowloris)
holds that thread as long as it likes, and a few of them hold every thread: nobody else is
served. A socket timeout bounds each read, not the whole request, and gunicorn reads until
it has what it asked for, so a byte a second passes any timeout. Instead one watchdog thread
per process shuts the reading side of a socket whose request is not in by its deadline: the
read ends early and the thread is free again. The app bounds the body (`init_app`), gunicorn's
worker the headers (web/gunicorn_worker.py).

A chunked body declares no length, and werkzeug reads one only up to MAX_CONTENT_LENGTH and
stops there without a word: the first 64 KiB of a longer body ran as if they were all of it.
Such a body is read here to one byte past the limit, and refused with 413 when that byte
comes.

This bounds what each slow client costs, not how many there are: production should sit
behind a proxy that reads whole requests before it passes them on, such as an Ingress
controller (docs/operations.md#slow-clients).
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, RequestTimeout
from werkzeug.wsgi import LimitedStream

# Plenty for a request's 8 KiB of headers, or the 64 KiB its body may have (MAX_BODY_BYTES),
# over a slow mobile link.
HEADERS_SECONDS = 10.0
BODY_SECONDS = 10.0


class Watch:
    """One socket being watched until `end()`; `expired` once it was cut off."""

    __slots__ = ("_lock", "deadline", "done", "expired", "sock")

    def __init__(self, sock: socket.socket, deadline: float, lock: threading.Condition) -> None:
        self.sock = sock
        self.deadline = deadline
        self.done = False
        self.expired = False
        self._lock = lock

    def end(self) -> None:
        """Stop watching: what was to be read is in."""
        # Under the watchdog's lock: once this returns the socket is never cut, even when
        # its deadline is passing just now.
        with self._lock:
            self.done = True


class Watchdog:
    """Cuts off the reading side of each watched socket still being read at its deadline."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Condition()
        # Every watch has the same length, so this queue is in order of deadline.
        self._watches: deque[Watch] = deque()
        self._running_in: int | None = None

    @contextmanager
    def watch(self, sock: socket.socket) -> Iterator[Watch]:
        """Watch `sock` while the block reads from it."""
        watch = Watch(sock, time.monotonic() + self.seconds, self._lock)
        with self._lock:
            # gunicorn loads the app before it forks its workers, and a thread does not
            # survive a fork: each worker process starts its own.
            if self._running_in != os.getpid():
                self._running_in = os.getpid()
                threading.Thread(target=self._run, name="slow-client-watchdog", daemon=True).start()
            self._watches.append(watch)
            if len(self._watches) == 1:
                self._lock.notify()  # waiting for a first watch; else for an earlier one
        try:
            yield watch
        finally:
            watch.end()

    def _run(self) -> None:
        with self._lock:
            while True:
                if not self._watches:
                    self._lock.wait()
                    continue
                first = self._watches[0]
                if first.done:
                    self._watches.popleft()
                    continue
                left = first.deadline - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                self._watches.popleft()
                first.expired = True
                with suppress(OSError):  # the client is gone already
                    first.sock.shutdown(socket.SHUT_RD)


def _read_chunked_body() -> None:
    """Read a chunked body to one byte past MAX_CONTENT_LENGTH (RequestEntityTooLarge when
    it has that byte), and leave what was read for the view to read again."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # As a maximum, the stream takes an empty read for the body's end; a client gone is
    # ClientDisconnected, as werkzeug's own reads make it.
    body = LimitedStream(request.environ["wsgi.input"], limit + 1, is_max=True).read()
    if len(body) > limit:
        raise RequestEntityTooLarge(f"The request body is over {limit:,} bytes.")
    request.environ["wsgi.input"] = io.BytesIO(body)


def _close_after_refusing_the_body(response: Response) -> Response:
    # What is left of a body refused unread would be taken for the next request.
    if response.status_code == RequestEntityTooLarge.code:
        response.headers["Connection"] = "close"
    return response


def init_app(app: Flask, seconds: float = BODY_SECONDS) -> None:
    """Read each request's body, under gunicorn, before the view runs, within `seconds`;
    under any server, refuse a chunked body over the limit."""
    watchdog = Watchdog(seconds)

    def read_body_in_time() -> None:
        sock = request.environ.get("gunicorn.socket")
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if not (request.content_length or chunked):
            return  # no body
        if sock is None:  # a server (the tests' client) that is not gunicorn
            if chunked:
                _read_chunked_body()
            return
        with watchdog.watch(sock) as watch:
            try:
                if chunked:
                    _read_chunked_body()
                # Kept: the view's get_data() and Flask's form parsing take it from here.
                body: bytes | None = request.get_data(cache=True)
            except (HTTPException, OSError):
                # Cut off, a chunked body stops short (gunicorn) or werkzeug sees the client
                # gone; a body of known length just ends early, as gunicorn's input is read
                # to its end.
                if not watch.expired:
                    raise
                body = None
        if watch.expired and (body is None or len(body) < (request.content_length or 0)):
            raise RequestTimeout(f"The request body did not arrive within {seconds:g} s.")

    app.before_request(read_body_in_time)
    app.after_request(_close_after_refusing_the_body)
