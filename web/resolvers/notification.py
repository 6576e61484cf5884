"""Fields of the Notification type and the admins' notification list."""

from __future__ import annotations

from ariadne import ObjectType, QueryType
from graphql import GraphQLResolveInfo

from models import notifications
from models.notifications import Notification
from web.resolvers.common import query
from web.resolvers.query import connection

notification_type = ObjectType("Notification")
notification_queries = QueryType()


@notification_type.field("phone")
def resolve_phone(notification: Notification, _info: GraphQLResolveInfo) -> str | None:
    phone = notification.phone
    return f"{phone[:4]}{'*' * (len(phone) - 7)}{phone[-3:]}" if phone and len(phone) > 7 else phone


@notification_queries.field("notifications")
def resolve_notifications(_, info: GraphQLResolveInfo, first: int, status=None, after=None):
    return connection(
        query(notifications.list_notifications, info, status=status, first=first, after=after)
    )
