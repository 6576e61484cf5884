"""Tables and the domain operations that change them. Business rules live here, once."""

from models.customers import Customer
from models.db import db
from models.delivery_reports import DeliveryReport
from models.idempotency import IdempotencyKey
from models.orders import Order, OrderEvent

__all__ = ["Customer", "DeliveryReport", "IdempotencyKey", "Order", "OrderEvent", "db"]
