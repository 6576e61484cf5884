"""gunicorn's threaded worker, whose threads wait at most HEADERS_SECONDS for a request's
headers (web/slow_clients.py says why), and which closes the connection after an answer that
says `Connection: close`; gunicorn.conf.py names it as the worker class."""

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

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi.wsgi_app = _closing(self.wsgi.wsgi_app)  # Flask's way to wrap its app

    def handle_request(self, req: Any, conn: gthread.TConn) -> Any:
        # gunicorn calls this once it has parsed the headers, in the thread that read them.
        conn.headers_watch.end()
        return super().handle_request(req, conn)


def _closing(app: Any) -> Any:
    """`app`, whose answers saying `Connection: close` close the connection."""

    def closing(environ: dict[str, Any], start_response: Any) -> Any:
        # gunicorn drops an app's Connection header (hop by hop) and keeps the connection;
        # before the next request it would read what is left of a body refused unread
        # (web/slow_clients.py), without end or deadline. The force_close() of its response,
        # whose method start_response is, closes the connection instead.
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if ("connection", "close") in ((n.lower(), v.lower()) for n, v in headers):
                start_response.__self__.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return closing
