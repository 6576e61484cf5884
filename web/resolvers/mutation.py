"""Root mutation fields for customers and orders: parse, call one domain function, shape."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType
from graphql import GraphQLResolveInfo

from models import customers, orders, placing, resending
from web.resolvers.common import count_sms, mutation, payload, settings_of

mutation_type = MutationType()


@mutation_type.field("createCustomer")
def resolve_create_customer(_, info: GraphQLResolveInfo, input: dict[str, Any]):
    settings = settings_of(info)
    customer, errors = mutation(
        customers.create_customer,
        info,
        region=settings.default_region,
        allowed_regions=settings.allowed_regions,
        **input,
    )
    return payload("customer", customer, errors, "Customer created!")


@mutation_type.field("updateCustomer")
def resolve_update_customer(_, info: GraphQLResolveInfo, id: str, input: dict[str, Any]):
    settings = settings_of(info)
    customer, errors = mutation(
        customers.update_customer,
        info,
        customer_id=id,
        region=settings.default_region,
        allowed_regions=settings.allowed_regions,
        **input,
    )
    return payload("customer", customer, errors, "Customer updated!")


@mutation_type.field("createOrder")
def resolve_create_order(_, info: GraphQLResolveInfo, input: dict[str, Any]):
    count_sms(info)
    fields = dict(input)
    fields["details"] = fields.pop("order_details", None)
    settings = settings_of(info)
    result, errors = mutation(
        placing.create_order,
        info,
        default_currency=settings.default_currency,
        company=settings.company_name,
        **fields,
    )
    return payload(
        "order",
        result.order if result else None,
        errors,
        "Order created!",
        replayed=bool(result and result.replayed),
    )


@mutation_type.field("confirmOrder")
def resolve_confirm_order(_, info: GraphQLResolveInfo, order_id: str):
    count_sms(info)
    order, errors = mutation(
        orders.confirm_order, info, order_id=order_id, company=settings_of(info).company_name
    )
    return payload("order", order, errors, "Order confirmed!", replayed=False)


@mutation_type.field("cancelOrder")
def resolve_cancel_order(_, info: GraphQLResolveInfo, order_id: str, reason: str | None = None):
    count_sms(info)
    order, errors = mutation(
        orders.cancel_order,
        info,
        order_id=order_id,
        reason=reason,
        company=settings_of(info).company_name,
    )
    return payload("order", order, errors, "Order cancelled.", replayed=False)


@mutation_type.field("resendNotification")
def resolve_resend_notification(_, info: GraphQLResolveInfo, id: str):
    count_sms(info)
    notification, errors = mutation(resending.resend, info, notification_id=id)
    return payload("notification", notification, errors, "Notification queued again.")
