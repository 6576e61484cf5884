"""Resolvers, one module per type; `bindables` is what the schema is built from."""

from web.resolvers.customer import customer_type
from web.resolvers.enums import (
    error_code_enum,
    notification_kind_enum,
    notification_status_enum,
    order_status_enum,
)
from web.resolvers.mutation import mutation_type
from web.resolvers.notification import (
    attempt_outcome_enum,
    attempt_type,
    notification_queries,
    notification_type,
)
from web.resolvers.order import order_event_type, order_type
from web.resolvers.query import query_type
from web.resolvers.scalars import datetime_scalar, decimal_scalar
from web.resolvers.session import session_mutations, session_queries

bindables = [
    query_type,
    mutation_type,
    session_queries,
    session_mutations,
    customer_type,
    order_type,
    order_event_type,
    notification_type,
    notification_queries,
    attempt_type,
    attempt_outcome_enum,
    error_code_enum,
    order_status_enum,
    notification_status_enum,
    notification_kind_enum,
    decimal_scalar,
    datetime_scalar,
]
