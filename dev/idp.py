"""A small Keycloak-shaped OpenID Connect provider for development and tests; never for production.

It serves one realm the way Keycloak does (discovery, JWKS, the token endpoint with the password and
refresh_token grants, userinfo, introspection, revocation and logout) plus two dev-only endpoints,
``POST /admin/rotate-keys`` and ``GET /admin/stats``. Run it with ``python -m dev.idp`` or embed it
in tests with ``DevIdentityProvider().serve_in_thread()``. The tokens themselves are made in
`dev.idp_tokens`, the users come from `dev.idp_users`.
"""

from __future__ import annotations

import argparse
import hmac
import os
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

from flask import Flask, Response, jsonify, request
from jose.exceptions import JOSEError
from werkzeug import serving

from dev import (
    PathOnlyRequestHandler,
    ProductionRefusedError,
    ServerThread,
    base_url,
    refuse_production,
)
from dev.idp_tokens import SUPPORTED_SCOPES, OAuthError, TokenIssuer
from dev.idp_users import DEFAULT_USERS_FILE

__all__ = ["DevIdentityProvider", "ProductionRefusedError", "RunningServer", "main"]


class RunningServer(ServerThread):
    """A provider served from a background thread."""

    def __init__(self, server: serving.BaseWSGIServer, *, url: str, issuer: str) -> None:
        super().__init__(server, url=url, name=f"dev-idp-{server.server_port}")
        self.issuer = issuer


def _error_response(error: OAuthError) -> Response:
    response = jsonify(error=error.error, error_description=error.description)
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


class DevIdentityProvider(TokenIssuer):
    """An in-memory Keycloak look-alike for one realm and one confidential client, over HTTP."""

    def __init__(
        self,
        users: str | os.PathLike[str] | Iterable[Any] | None = None,
        *,
        realm: str = "donfiles",
        client_id: str = "customer_api",
        client_secret: str | None = "dev-secret",  # noqa: S107 - the documented dev secret
        access_token_lifespan: int = 300,
        refresh_token_lifespan: int = 1800,
        public_url: str | None = None,
    ) -> None:
        refuse_production("dev.idp", "point the service at a real Keycloak instead")
        super().__init__(
            users,
            realm=realm,
            client_id=client_id,
            access_token_lifespan=access_token_lifespan,
            refresh_token_lifespan=refresh_token_lifespan,
            base_url=public_url or "http://127.0.0.1:8080",
        )
        self.client_secret = client_secret  # None makes the client public: no secret checked
        self._fixed_url = public_url is not None
        self.jwks_requests = 0
        self.token_requests = 0
        self.logout_requests = 0  # the logout and revocation endpoints together
        self.app = self._create_app()

    def stats(self) -> dict[str, Any]:
        """Counters for tests: JWKS, token and logout requests, live sessions and the signing
        kids."""
        with self._lock:
            return {
                "jwks_requests": self.jwks_requests,
                "token_requests": self.token_requests,
                "logout_requests": self.logout_requests,
                "active_sessions": self.active_sessions,
                "active_kid": self.active_kid,
                "kids": self.kids,
            }

    def discovery(self) -> dict[str, Any]:
        """The realm's .well-known/openid-configuration document."""
        oidc = f"{self.issuer}/protocol/openid-connect"
        auth_methods = ["client_secret_basic", "client_secret_post"]
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{oidc}/token",
            "introspection_endpoint": f"{oidc}/token/introspect",
            "userinfo_endpoint": f"{oidc}/userinfo",
            "end_session_endpoint": f"{oidc}/logout",
            "jwks_uri": f"{oidc}/certs",
            "revocation_endpoint": f"{oidc}/revoke",
            "grant_types_supported": ["password", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "scopes_supported": list(SUPPORTED_SCOPES),
        }

    def _create_app(self) -> Flask:
        app = Flask(__name__)
        app.json.sort_keys = False  # type: ignore[attr-defined]  # keep Keycloak's field order
        base = f"/realms/{self.realm}"
        oidc = f"{base}/protocol/openid-connect"
        routes = [
            (f"{base}/.well-known/openid-configuration", self._discovery, ["GET"]),
            (f"{oidc}/certs", self._certs, ["GET"]),
            (f"{oidc}/token", self._token, ["POST"]),
            (f"{oidc}/token/introspect", self._introspect, ["POST"]),
            (f"{oidc}/userinfo", self._userinfo, ["GET", "POST"]),
            (f"{oidc}/revoke", self._revoke, ["POST"]),
            (f"{oidc}/logout", self._logout, ["POST"]),
            ("/admin/rotate-keys", self._admin_rotate_keys, ["POST"]),
            ("/admin/stats", lambda: jsonify(self.stats()), ["GET"]),
        ]
        for rule, view, methods in routes:
            app.add_url_rule(rule, endpoint=rule, view_func=view, methods=methods)
        app.register_error_handler(OAuthError, _error_response)
        return app

    def _discovery(self) -> Response:
        return jsonify(self.discovery())

    @staticmethod
    def _no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    def _authenticate_client(self) -> None:
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            # RFC 6749 2.3.1: Basic credentials are form-urlencoded before base64.
            client_id, secret = unquote_plus(auth.username or ""), unquote_plus(auth.password or "")
        else:
            client_id = request.form.get("client_id", "")
            secret = request.form.get("client_secret", "")
        secret_ok = self.client_secret is None or hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        )
        if client_id != self.client_id or not secret_ok:
            raise OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")

    def _granted_scope(self, requested: str | None) -> str:
        asked = (requested or "").split()
        if any(scope not in SUPPORTED_SCOPES for scope in asked):
            raise OAuthError(400, "invalid_scope", f"Invalid scopes: {requested}")
        # profile and email are the client's default scopes: Keycloak grants them unasked.
        return " ".join(s for s in SUPPORTED_SCOPES if s in asked or s in ("profile", "email"))

    def _certs(self) -> Response:
        with self._lock:
            self.jwks_requests += 1
        response = jsonify(self.jwks())
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _token(self) -> Response:
        with self._lock:
            self.token_requests += 1
        form = request.form
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        self._authenticate_client()
        if grant_type == "password":
            user = self.check_password(form.get("username", ""), form.get("password", ""))
            if user is None:
                raise OAuthError(401, "invalid_grant", "Invalid user credentials")
            if not user.enabled:
                raise OAuthError(400, "invalid_grant", "Account disabled")
            session = self.new_session(user, self._granted_scope(form.get("scope")))
        elif grant_type == "refresh_token":
            session = self.verify_refresh_token(form.get("refresh_token"))
            user = self.user(session.username)
        else:
            raise OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
        return self._no_store(jsonify(self.token_response(user, session)))

    def _userinfo(self) -> Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = request.form.get("access_token", "") if request.method == "POST" else ""
        if not token:
            raise self.bearer_error("invalid_request", "Token not provided")
        claims = self.verify_access_token(token.strip())
        user = next((u for u in self.users.values() if u.sub == claims.get("sub")), None)
        if user is None:
            raise self.bearer_error("invalid_token", "User not found")
        return jsonify({"sub": user.sub, **user.profile_claims()})

    def _introspect(self) -> Response:
        self._authenticate_client()
        try:
            claims = self.decode(request.form.get("token", ""))
        except JOSEError:
            return jsonify(active=False)
        if not self.is_live(claims):
            return jsonify(active=False)
        extra = {"client_id": claims.get("azp"), "username": claims.get("preferred_username")}
        return jsonify({**claims, **extra, "active": True})

    def _revoke(self) -> Response:
        with self._lock:
            self.logout_requests += 1
        self._authenticate_client()
        token = request.form.get("token")
        if not token:
            raise OAuthError(400, "invalid_request", "Token not provided")
        if request.form.get("token_type_hint") not in (None, "", "access_token", "refresh_token"):
            raise OAuthError(400, "unsupported_token_type", "Unsupported token type")
        self.revoke_token(token)  # RFC 7009 2.2: unknown or invalid tokens also get a 200
        return self._no_store(Response(status=200))

    def _logout(self) -> Response:
        with self._lock:
            self.logout_requests += 1
        self._authenticate_client()
        token = request.form.get("refresh_token")
        if not token:
            raise OAuthError(400, "invalid_request", "No refresh token")
        self.revoke_session(self.verify_refresh_token(token).sid)
        return Response(status=204)

    def _admin_rotate_keys(self) -> Response:
        drop_old = request.args.get("drop_old", "").lower() in ("1", "true", "yes")
        kid = self.rotate_keys(drop_old=drop_old)
        return jsonify(kid=kid, kids=self.kids)

    # -- serving -------------------------------------------------------------------------------

    def bind(self, host: str = "127.0.0.1", port: int = 0) -> serving.BaseWSGIServer:
        """Bind a threaded werkzeug server; unless `public_url` was given, the issuer follows
        the bound address."""
        refuse_production("dev.idp", "point the service at a real Keycloak instead")
        server = serving.make_server(
            host, port, self.app, threaded=True, request_handler=PathOnlyRequestHandler
        )
        if not self._fixed_url:
            self.base_url = base_url(host, server.server_port)
        return server

    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
        """Serve over HTTP from a daemon thread (port 0 picks a free port)."""
        server = self.bind(host, port)
        return RunningServer(server, url=self.base_url, issuer=self.issuer)


def _banner(idp: DevIdentityProvider) -> str:
    lines = [
        "dev.idp: a Keycloak-shaped identity provider for DEVELOPMENT ONLY",
        f"  issuer:    {idp.issuer}",
        f"  discovery: {idp.issuer}/.well-known/openid-configuration",
        f"  client:    {idp.client_id} (secret: {idp.client_secret or '-'})",
        "  users (username / password):",
    ]
    for user in idp.users.values():
        realm_roles = ", ".join(user.realm_roles) or "-"
        client_roles = ", ".join(f"{c}:{r}" for c, rs in user.client_roles.items() for r in rs)
        lines.append(
            f"    {user.username} / {user.password}   realm roles: {realm_roles};"
            f" client roles: {client_roles or '-'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve the provider until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m dev.idp", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--users", default=str(DEFAULT_USERS_FILE), help="users.json path")
    parser.add_argument("--realm", default="donfiles")
    parser.add_argument("--client-id", default="customer_api")
    parser.add_argument("--client-secret", default="dev-secret")
    parser.add_argument("--access-token-lifespan", type=int, default=300, help="seconds")
    parser.add_argument("--refresh-token-lifespan", type=int, default=1800, help="seconds")
    parser.add_argument(
        "--public-url", help="base URL clients use, e.g. http://idp:8080 (default: bound address)"
    )
    args = parser.parse_args(argv)
    try:
        idp = DevIdentityProvider(
            args.users,
            realm=args.realm,
            client_id=args.client_id,
            client_secret=args.client_secret,
            access_token_lifespan=args.access_token_lifespan,
            refresh_token_lifespan=args.refresh_token_lifespan,
            public_url=args.public_url,
        )
        server = idp.bind(args.host, args.port)
    except ProductionRefusedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(_banner(idp), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
