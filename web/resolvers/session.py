"""Sign-in fields: login, refreshToken, logout, and who the caller is."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, QueryType
from graphql import GraphQLError, GraphQLResolveInfo

from models.actors import Actor
from models.customers import Customer
from models.db import db, has_written
from web.auth import current_auth
from web.identity import UNAVAILABLE, GrantResult
from web.rate_limits import rate_limits
from web.resolvers.common import actor_of
from web.tokens import InvalidToken

session_queries = QueryType()
session_mutations = MutationType()
TOO_MANY_SIGN_IN_FIELDS = "TOO_MANY_SIGN_IN_FIELDS"


class TooManySignInFieldsError(GraphQLError):
    def __init__(self) -> None:
        super().__init__(
            "Only one of login, refreshToken and logout runs per request; send this one alone.",
            extensions={"code": TOO_MANY_SIGN_IN_FIELDS},
        )


def one_sign_in(info: GraphQLResolveInfo) -> None:
    """Let the first sign-in field of a request run and refuse the others: aliased, each
    would be one more call to the identity provider for the price of one request."""
    if info.context.get("sign_in_ran"):
        raise TooManySignInFieldsError()
    info.context["sign_in_ran"] = True


def user_info(actor: Actor) -> dict[str, Any]:
    # The phone is the customer record's (an edit through updateCustomer shows at once).
    customer = db.session.get(Customer, actor.customer_id) if actor.customer_id else None
    return {
        "user_id": actor.subject,
        "email": actor.email,
        "full_name": actor.name,
        "username": actor.username,
        "phone": customer.phone if customer else None,
        "roles": sorted(actor.roles),
    }


def login_payload(result: GrantResult) -> dict[str, Any]:
    """Tokens and the user they belong to; the access token is verified like any other."""
    empty = {"access_token": None, "refresh_token": None, "expires_in": None, "user_info": None}
    if not result.success or result.tokens is None:
        return {**empty, "success": False, "message": result.message}
    auth = current_auth()
    try:
        claims = auth.verifier.verify(result.tokens["access_token"])  # type: ignore[union-attr]
    except InvalidToken:
        return {
            **empty,
            "success": False,
            "message": "the identity provider issued an unusable token",
        }
    actor = auth.actor_for(claims)
    return {
        "access_token": result.tokens["access_token"],
        "refresh_token": result.tokens.get("refresh_token"),
        "expires_in": result.tokens.get("expires_in"),
        "user_info": user_info(actor),
        "success": True,
        "message": result.message,
    }


def _provider():
    """The identity provider, after ending this request's transaction if it only read (the
    caller's record, for a token not seen before): its pooled connection must not sit idle in
    a transaction while the provider answers. A transaction that wrote (a customer provisioned
    on first sight) stays for the request's one commit."""
    session = db.session()
    if session.in_transaction() and not has_written(session):
        session.rollback()
    return current_auth().provider


@session_mutations.field("login")
def resolve_login(_, info: GraphQLResolveInfo, input: dict[str, str]):
    one_sign_in(info)
    provider = _provider()
    if provider is None:
        return login_payload(GrantResult(False, UNAVAILABLE))
    # Guesses past the limits never reach the provider, whose own lockout would shut the
    # user out of every client.
    limits = rate_limits()
    limits.count_login(input["username"])
    result = provider.password_grant(input["username"], input["password"])
    if result.success:
        limits.login_succeeded()
    return login_payload(result)


@session_mutations.field("refreshToken")
def resolve_refresh_token(_, info: GraphQLResolveInfo, input: dict[str, str]):
    one_sign_in(info)
    provider = _provider()
    if provider is None:
        return login_payload(GrantResult(False, UNAVAILABLE))
    rate_limits().count_session()
    return login_payload(provider.refresh_grant(input["refresh_token"]))


@session_mutations.field("logout")
def resolve_logout(_, info: GraphQLResolveInfo, refresh_token: str):
    actor_of(info)
    one_sign_in(info)
    provider = _provider()
    if provider is None:
        return {"success": False, "message": UNAVAILABLE}
    rate_limits().count_session()
    result = provider.logout(refresh_token)
    return {"success": result.success, "message": result.message}


@session_queries.field("userInfo")
def resolve_user_info(_, info: GraphQLResolveInfo):
    return user_info(actor_of(info))
