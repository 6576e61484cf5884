"""The `flower` process: Flower, with its basic auth in front of every path but /healthcheck.

Flower 2.2 asks for its credentials (`FLOWER_BASIC_AUTH`) only in some handlers: `/metrics`
(task names, worker names, counts), `/static/...`, `/logout`, `/login`, unknown paths and any
OPTIONS request answer without them. Run as `python -m worker.flower --address=... --port=...`
(Flower's own options and FLOWER_* variables apply), it starts Flower as `celery flower`
does, with one check before any handler runs. In production it does not start without
credentials, nor with a user or password left empty; nowhere does it listen beyond loopback
without them.

Given neither, it listens on PORT (the platform's) on every interface: on Heroku, where only a
`web` process is reachable, a second app whose `web` is this (deploy/heroku/flower/Procfile).
Flower needs Redis alone, so it has a Celery app of its own: the worker's broker settings,
without the database or the service's other secrets.
"""

from __future__ import annotations

import atexit
import hmac
import ipaddress
import logging
import signal
import sys
from typing import Any

from celery import Celery
from flower import command, urls
from flower.app import Flower
from tornado.httputil import HTTPServerRequest
from tornado.options import options
from tornado.web import RequestHandler
from werkzeug.datastructures import Authorization

import celeryconfig
from common.logs import configure

# Makes PROMETHEUS_MULTIPROC_DIR where it is missing (an empty emptyDir), before Flower's
# metrics open their files there.
from common.metrics import prepare_multiprocess_dir  # noqa: F401
from common.settings import FLOWER_REQUIRED, ConfigError, Settings, warn_once

HEALTHCHECK = "/healthcheck"
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 - only ever behind FLOWER_BASIC_AUTH


class Unauthorized(RequestHandler):
    """401 with a basic-auth challenge, whatever the method."""

    def check_xsrf_cookie(self) -> None:
        pass  # it changes nothing, and a stranger's POST must learn 401 too, not 403

    def prepare(self) -> None:
        self.set_status(401)
        self.set_header("WWW-Authenticate", 'Basic realm="flower"')
        self.finish("Access denied")


class GuardedFlower(Flower):
    """Flower that serves nothing but its health check to a request without credentials."""

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        credentials = self.options.basic_auth
        if credentials and request.path != self.healthcheck_path:
            given = Authorization.from_header(request.headers.get("Authorization"))
            if not _one_of(given, credentials):
                return self.get_handler_delegate(request, Unauthorized)
        return super().find_handler(request, **kwargs)

    @property
    def healthcheck_path(self) -> str:
        prefix = (self.options.url_prefix or "").strip("/")
        return f"/{prefix}{HEALTHCHECK}" if prefix else HEALTHCHECK


def _one_of(given: Authorization | None, credentials: list[str]) -> bool:
    if given is None or given.type != "basic":
        return False
    pair = f"{given.username}:{given.password}".encode()
    # Every pair compared, in constant time: the answer's timing tells nothing.
    matches = [hmac.compare_digest(pair, credential.encode()) for credential in credentials]
    return any(matches)


def check_credentials(credentials: list[str] | None, settings: Settings) -> None:
    """Refuse pairs that would let someone in with less than a user and a password."""
    if not credentials:
        if settings.is_production:
            raise ConfigError("FLOWER_BASIC_AUTH is required in production")
        return
    for credential in credentials:
        user, colon, password = credential.partition(":")
        if not (user and colon and password):
            raise ConfigError(
                "FLOWER_BASIC_AUTH must be user:password pairs separated by commas, each "
                "with a user and a password (a password may not hold a comma)"
            )


def is_loopback(address: str) -> bool:
    """Whether Flower listening on `address` is reachable from this host alone ("" means
    every interface to Tornado)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # "", or a host name: it may be anyone's
        return False


def check_exposure(address: str, credentials: list[str] | None) -> None:
    """Refuse to listen beyond loopback without credentials, in any mode."""
    if not credentials and not is_loopback(address):
        where = address or "every interface"
        raise ConfigError(
            f"FLOWER_BASIC_AUTH is required when Flower listens on {where}, beyond this host"
        )


def flower_celery(settings: Settings) -> Celery:
    """The Celery app Flower watches: the worker's broker (URL, TLS, timeouts) and queue, as
    celeryconfig.py has them, and nothing that reads the database or other secrets."""
    app = Celery("orders", set_as_current=False)
    app.config_from_object(celeryconfig.config(settings))
    # No pool: Flower's inspections each open a connection of their own, and a pool kept
    # twenty of them open for good (Heroku Redis mini allows twenty in all).
    app.conf.broker_pool_limit = 0
    return app


def main(argv: list[str] | None = None) -> None:
    """Start Flower on the worker's broker, as `celery --app worker.main flower` would."""
    settings = Settings.from_env(required=FLOWER_REQUIRED)
    configure(settings.log_level)  # JSON lines; Tornado adds no handler of its own then
    warn_once(settings)
    if settings.port is not None:  # the platform's, unless FLOWER_PORT or --port say
        options.port, options.address = settings.port, EVERY_INTERFACE
    command.apply_env_options()
    command.apply_options(sys.argv[0], sys.argv[1:] if argv is None else argv)
    command.extract_settings()
    command.setup_logging()
    check_credentials(options.basic_auth, settings)
    check_exposure(options.address, options.basic_auth)

    celery_app = flower_celery(settings)
    flower = GuardedFlower(capp=celery_app, options=options, **urls.settings)
    atexit.register(flower.stop)
    signal.signal(signal.SIGTERM, command.sigterm_handler)
    port = flower.start_http_server()
    command.print_banner(celery_app, "ssl_options" in urls.settings, port)
    flower.start()


if __name__ == "__main__":
    try:
        main()
    except ConfigError as error:
        logging.getLogger("worker.flower").critical("%s", error)
        sys.exit(1)
