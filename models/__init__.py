"""Tables and the domain operations that change them. Business rules live here, once."""

from models.customers import Customer
from models.db import db
from models.orders import IdempotencyKey, Order, OrderEvent

__all__ = ["Customer", "IdempotencyKey", "Order", "OrderEvent", "db"]
