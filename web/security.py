"""Response headers that keep browsers and caches from misusing the service's answers, and
the proxies whose forwarded headers are believed.

Every response (the GraphQL answers, health, metrics, callbacks, and the errors the handlers
make) gets `X-Content-Type-Options`, `Referrer-Policy`, a Content-Security-Policy (nothing may
load or frame an API answer; GraphiQL's page sets its own) and `Cache-Control: no-store`
unless its view chose otherwise. In production a request that came over TLS also gets HSTS.
Whether it came over TLS, and from which client, is read from `X-Forwarded-Proto` and
`X-Forwarded-For` only for the `TRUSTED_PROXIES` proxies in front (werkzeug's ProxyFix).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from html.parser import HTMLParser

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from common.settings import Settings

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000; includeSubDomains"
# What ariadne's GraphiQL page loads besides its inline blocks: modules and styles from
# esm.sh, one module shimmed with a data: URL in its import map, fonts and images inlined as
# data: URLs in GraphiQL's stylesheet, and Monaco's workers, made from blob: URLs, whose
# imports come from esm.sh too (a module worker's imports are checked against worker-src).
GRAPHIQL_CDN = "https://esm.sh"


def init_app(app: Flask, settings: Settings) -> None:
    """Believe the configured proxies' forwarded headers and give every response its headers."""
    if settings.trusted_proxies:
        # Each proxy appends to X-Forwarded-For: the last n values are the ones they wrote.
        # With none configured a client's own X-Forwarded-* change nothing.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    production = settings.is_production

    def add_headers(response: Response) -> Response:
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Content-Security-Policy", API_POLICY)
        # Every answer is private: tokens (login, refreshToken), orders, customers, phone
        # numbers. no-store keeps them out of every cache, the browser's included; a view whose
        # answer may be kept (a GET query, say, with `private, max-age=...`) sets its own.
        headers.setdefault("Cache-Control", "no-store")
        if production and request.is_secure:
            headers["Strict-Transport-Security"] = HSTS
        return response

    app.after_request(add_headers)


def graphiql_response(html: str) -> Response:
    """GraphiQL's page with a policy that lets exactly that page run (`graphiql_policy`)."""
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = graphiql_policy(html)
    return response


@lru_cache(maxsize=4)
def graphiql_policy(html: str) -> str:
    """The Content-Security-Policy of GraphiQL's page `html`.

    Its inline scripts (the import map and the module that starts GraphiQL) run by their
    hashes and nothing else inline does. Styles may be inline: Monaco, GraphiQL's editor, adds
    `<style>` elements and style attributes as it runs, with no nonce, so a hash would block
    them (microsoft/monaco-editor#271); a style cannot run code. The page talks only to its
    own origin, and nothing may frame it, change its base URL or submit a form from it.
    """
    blocks = _InlineBlocks()
    blocks.feed(html)
    blocks.close()
    scripts = " ".join(f"'sha256-{_sha256(script)}'" for script in blocks.scripts)
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {scripts} {GRAPHIQL_CDN} data:",
            f"style-src {GRAPHIQL_CDN} 'unsafe-inline'",
            "font-src data:",
            "img-src data:",
            f"worker-src blob: {GRAPHIQL_CDN}",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )


def _sha256(text: str) -> str:
    # A browser hashes the text as it parsed it, line ends made LF.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


class _InlineBlocks(HTMLParser):
    """Collects the text of a page's inline `<script>` elements (those without `src`)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and not any(name == "src" for name, _ in attrs):
            self._inside = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.scripts[-1] += data
