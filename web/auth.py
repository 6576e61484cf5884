"""Who is calling: the bearer token checked locally, the caller's customer found or created.

The result is `g.actor` (None without a token), the one place resolvers learn the caller from.
A token that fails its checks (expired, say) is never trusted: the request is answered 401,
unless its operation selects only fields that need no token (`login`, `refreshToken`), which
then run as for a stranger. A client that sends its token with every request can so still
trade its refresh token for a new one once the access token expired.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, g, request
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_operation_ast,
)

from common.logs import subject_var
from common.settings import Settings
from models.actors import Actor
from models.customers import provision_customer
from models.db import db, has_written
from models.validation import storable
from web import graphql_http as http
from web.identity import IdentityProvider
from web.tokens import (
    InvalidToken,
    JWKSCache,
    RecentTokens,
    TokenVerifier,
    require_cryptography_backend,
    roles_from_claims,
)

log = logging.getLogger(__name__)
# The root fields that answer without a token, by operation type: signing in, and what GraphQL
# answers itself. Every other field's resolver asks for the caller (`actor_of`).
TOKENLESS_FIELDS = {
    OperationType.QUERY: frozenset({"__typename", "__schema", "__type"}),
    OperationType.MUTATION: frozenset({"__typename", "login", "refreshToken"}),
}


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


def token_refused() -> bool:
    """Whether this request came with an Authorization header that was refused."""
    return g.get("token_refused", False)


def refusal(media: str = http.JSON) -> Response:
    """The 401 for a refused token: a GraphQL error (UNAUTHENTICATED) in `media`."""
    response = http.error_response(
        401, "The access token is invalid or expired.", "UNAUTHENTICATED", media
    )
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def needs_no_token(document: DocumentNode | None, operation_name: object) -> bool:
    """Whether the operation a request runs selects only TOKENLESS_FIELDS at its root (its
    fragments' fields included); false when there is no such operation."""
    if document is None:
        return False
    name = operation_name if isinstance(operation_name, str) else None
    operation = get_operation_ast(document, name)
    if operation is None:
        return False
    fragments = {
        definition.name.value: definition.selection_set
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    allowed = TOKENLESS_FIELDS.get(operation.operation, frozenset())
    pending: list[SelectionSetNode] = [operation.selection_set]
    seen: set[str] = set()
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                if selection.name.value not in allowed:
                    return False
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in fragments:
                    return False  # validation refuses it: nothing to run anyway
                if name not in seen:
                    seen.add(name)
                    pending.append(fragments[name])
    return True


def authenticate() -> None:
    """Set `g.actor` from the bearer token; an unusable one sets `g.token_refused` instead,
    and the endpoint answers 401 unless the request needs no token (`needs_no_token`)."""
    g.actor = None
    header = request.headers.get("Authorization")
    if not header or request.endpoint != "graphql.execute":
        return
    scheme, _, token = header.partition(" ")
    token = token.strip()
    auth = current_auth()
    if scheme.lower() != "bearer" or not token or auth.verifier is None:
        g.token_refused = True
        return
    try:
        claims = auth.verifier.verify(token)
    except InvalidToken as error:
        log.info("token refused: %s", error)
        g.token_refused = True
        return
    subject_var.set(claims["sub"])
    g.actor = auth.actor_for_token(token, claims)
