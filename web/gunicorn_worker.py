"""gunicorn's threaded worker, whose threads wait at most HEADERS_SECONDS for a request's
headers (web/slow_clients.py says why); gunicorn.conf.py names it as the worker class."""

from __future__ import annotations

from typing import Any

from gunicorn.workers import gthread

from web.slow_clients import HEADERS_SECONDS, Watchdog

_HEADERS = Watchdog(HEADERS_SECONDS)


class ThreadWorker(gthread.ThreadWorker):
    """`gthread`, with a deadline from the moment a thread takes a connection until the
    request's headers are in; the app then bounds the body."""

    def handle(self, conn: gthread.TConn) -> Any:
        with _HEADERS.watch(conn.sock) as watch:
            conn.headers_watch = watch
            return super().handle(conn)

    def handle_request(self, req: Any, conn: gthread.TConn) -> Any:
        # gunicorn calls this once it has parsed the headers, in the thread that read them.
        conn.headers_watch.end()
        return super().handle_request(req, conn)
