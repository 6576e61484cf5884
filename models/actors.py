"""Who is acting: the authenticated caller, as the domain sees it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Actor:
    """An authenticated caller: its subject, roles and (once provisioned) its customer."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    customer_id: uuid.UUID | None = None
    is_admin: bool = False
    name: str | None = None
    email: str | None = None
    username: str | None = None
