"""Fields of the Notification type, its attempts, and the admins' notification list."""

from __future__ import annotations

from ariadne import EnumType, ObjectType, QueryType
from graphql import GraphQLResolveInfo

from models import notifications
from models.notifications import AttemptOutcome, Notification, NotificationAttempt
from web.resolvers import batches
from web.resolvers.common import query
from web.resolvers.query import connection

notification_type = ObjectType("Notification")
attempt_type = ObjectType("NotificationAttempt")
attempt_outcome_enum = EnumType("AttemptOutcome", AttemptOutcome)
notification_queries = QueryType()


def masked(phone: str | None) -> str | None:
    """A phone number with all but its first four and last three characters hidden."""
    return f"{phone[:4]}{'*' * (len(phone) - 7)}{phone[-3:]}" if phone and len(phone) > 7 else phone


@notification_type.field("phone")
def resolve_phone(notification: Notification, _info: GraphQLResolveInfo) -> str | None:
    return masked(notification.phone)


@notification_type.field("history")
def resolve_history(notification: Notification, info: GraphQLResolveInfo):
    return batches.attempts_of(notification, info)


@notification_type.field("inDoubt")
def resolve_in_doubt(notification: Notification, _info: GraphQLResolveInfo) -> bool:
    return bool(notification.in_doubt)


@attempt_type.field("phone")
def resolve_attempt_phone(attempt: NotificationAttempt, _info: GraphQLResolveInfo) -> str | None:
    return masked(attempt.phone)


@attempt_type.field("outcome")
def resolve_outcome(attempt: NotificationAttempt, _info: GraphQLResolveInfo):
    return AttemptOutcome(attempt.outcome) if attempt.outcome else None


@attempt_type.field("gatewayStatus")
def resolve_gateway_status(attempt: NotificationAttempt, _info: GraphQLResolveInfo):
    return attempt.gateway_status


@notification_queries.field("notifications")
def resolve_notifications(_, info: GraphQLResolveInfo, **filters):
    page = query(notifications.list_notifications, info, **filters)
    batches.shown(info, page.items)
    return connection(page)
