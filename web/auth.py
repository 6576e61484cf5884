"""Who is calling: the bearer token checked locally, the caller's customer found or created.

The result is `g.actor` (None without a token), the one place resolvers learn the caller from.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, jsonify, request

from models.actors import Actor
from models.customers import provision_customer
from models.db import db, has_written
from models.validation import storable
from web.config import Settings
from web.identity import IdentityProvider
from web.logs import subject_var
from web.tokens import (
    InvalidToken,
    JWKSCache,
    RecentTokens,
    TokenVerifier,
    require_cryptography_backend,
    roles_from_claims,
)

log = logging.getLogger(__name__)


class Auth:
    """The identity provider client and the token verifier of one app."""

    def __init__(self, settings: Settings) -> None:
        require_cryptography_backend()
        self.settings = settings
        self.provider: IdentityProvider | None = None
        self.verifier: TokenVerifier | None = None
        # A token whose customer was already committed, with claims that changed nothing,
        # names the same customer until it expires (customers are never deleted): later
        # requests with it need no query. Only verified tokens are looked up here.
        self._actors = RecentTokens()
        if settings.oidc_issuer:
            self.provider = IdentityProvider(
                settings.oidc_issuer,
                settings.oidc_client_id,
                settings.oidc_client_secret,
                settings.oidc_jwks_url,
            )
            self.verifier = TokenVerifier(
                keys=JWKSCache(self.provider.jwks_url),
                issuer=settings.oidc_issuer,
                audience=settings.audience,
                authorized_parties=settings.authorized_parties,
            )

    def actor_for_token(self, token: str, claims: dict) -> Actor:
        """`actor_for(claims)`, remembered for this token once provisioning found nothing to
        write."""
        actor = self._actors.get(token)
        if actor is None:
            actor = self.actor_for(claims)
            if not has_written(db.session):
                self._actors.put(token, actor)
        return actor

    def actor_for(self, claims: dict) -> Actor:
        """The caller as the domain sees it, its customer record created on first sight."""
        roles = roles_from_claims(claims, self.settings.oidc_client_id)
        customer = provision_customer(
            db.session,
            subject=claims["sub"],
            name=claims.get("name") or claims.get("preferred_username"),
            email=claims.get("email"),
            phone=claims.get("phone_number"),
            region=self.settings.default_region,
            allowed_regions=self.settings.allowed_regions,
        )
        return Actor(
            subject=claims["sub"],
            roles=roles,
            customer_id=customer.id,
            is_admin=self.settings.admin_role in roles,
            name=_text(claims, "name"),
            email=_text(claims, "email"),
            username=_text(claims, "preferred_username"),
        )


def _text(claims: dict, name: str) -> str | None:
    # A claim that is not text (a lone surrogate, a NUL) is not shown, as it is not stored.
    value = claims.get(name)
    return value if isinstance(value, str) and storable(value) else None


def current_auth() -> Auth:
    return current_app.extensions["auth"]


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["auth"] = Auth(settings)
    app.before_request(authenticate)


def _refuse():
    response = jsonify(
        {
            "errors": [
                {
                    "message": "The access token is invalid or expired.",
                    "extensions": {"code": "UNAUTHENTICATED"},
                }
            ]
        }
    )
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def authenticate():
    """Set `g.actor` from the bearer token; an invalid token ends the request with 401."""
    g.actor = None
    header = request.headers.get("Authorization")
    if not header or request.endpoint != "graphql.execute":
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    auth = current_auth()
    if scheme.lower() != "bearer" or not token or auth.verifier is None:
        return _refuse()
    try:
        claims = auth.verifier.verify(token)
    except InvalidToken as error:
        log.info("token refused: %s", error)
        return _refuse()
    subject_var.set(claims["sub"])
    g.actor = auth.actor_for_token(token, claims)
    return None
