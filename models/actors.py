"""Who is acting: the authenticated caller, as the domain sees it, and what it may see."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, true

from models.errors import DomainError, ErrorCode


@dataclass(frozen=True)
class Actor:
    """An authenticated caller: its subject, roles and (once provisioned) its customer.

    The rule for a customer's records (the customer itself, its orders and their
    notifications) is here, once: an admin may see and change every customer's, a customer
    only its own."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    customer_id: uuid.UUID | None = None
    is_admin: bool = False
    name: str | None = None
    email: str | None = None
    username: str | None = None

    def may_see(self, customer_id: uuid.UUID | None) -> bool:
        """Whether the records of this customer are the actor's to see and change."""
        return self.is_admin or customer_id == self.customer_id

    def sees(self, customer_id: Any) -> ColumnElement[bool]:
        """`may_see` as a condition on a query's customer id column."""
        return true() if self.is_admin else customer_id == self.customer_id

    def require_admin(self, message: str = "only an admin may do this") -> None:
        """Refuse (FORBIDDEN) what only an admin may do."""
        if not self.is_admin:
            raise DomainError.single(None, ErrorCode.FORBIDDEN, message)
