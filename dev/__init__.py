"""Development stand-ins: the service runner, an OpenID provider and an SMS gateway.

- `dev.services` runs a command with PostgreSQL and Redis (`dev.postgres_server`,
  `dev.redis_server`, on the process machinery of `dev.processes`) and optionally dev.idp.
- `dev.idp` serves a Keycloak-shaped realm over HTTP; its tokens come from `dev.idp_tokens`,
  its users from `dev.idp_users`.
- `dev.sms_gateway` imitates Africa's Talking's SMS API: what it answers is `dev.sms_protocol`,
  what it records `dev.sms_ledger`, its admin API `dev.sms_admin`, and `dev.replies` tells
  whether a reply reached the client.

None of them may run in production; each refuses to start there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

from werkzeug import serving


class ProductionRefusedError(RuntimeError):
    """A development stand-in was asked to start while APP_ENV or FLASK_ENV says production."""


def refuse_production(what: str, instead: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise `ProductionRefusedError` when APP_ENV or FLASK_ENV is set to production."""
    env = os.environ if environ is None else environ
    for name in ("APP_ENV", "FLASK_ENV"):
        if env.get(name, "").strip().lower() in ("production", "prod"):
            raise ProductionRefusedError(
                f"{what} refuses to run with {name}={env[name]!r}; {instead}"
            )


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to `host`:`port`."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104 - display only
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


class PathOnlyRequestHandler(serving.WSGIRequestHandler):
    """Logs method, path and status, never the query string (where a client may put a token
    or key) nor headers; `verbose = False` silences it."""

    verbose = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.verbose:
            self.log("info", '"%s %s" %s', self.command, self.path.split("?", 1)[0], code)


class ServerThread:
    """A werkzeug server serving from a daemon thread until `shutdown()`."""

    def __init__(
        self,
        server: serving.BaseWSGIServer,
        *,
        url: str,
        name: str,
        before_shutdown: Callable[[], object] | None = None,
    ) -> None:
        self.url = url
        self.port = server.server_port
        self._server = server
        self._before_shutdown = before_shutdown
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving and close the listening socket."""
        if self._before_shutdown is not None:
            self._before_shutdown()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
