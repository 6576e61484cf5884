"""The users of dev.idp's realm, read from users.json: the people of Keycloak's demo realm."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_USERS_FILE = Path(__file__).with_name("users.json")


@dataclass(frozen=True)
class DevUser:
    """A user of the dev realm, as listed in users.json."""

    username: str
    password: str = field(repr=False)
    sub: str
    name: str
    email: str
    phone_number: str | None = None
    email_verified: bool = True
    enabled: bool = True
    realm_roles: tuple[str, ...] = ()
    client_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DevUser:
        """Build a user from one users.json entry."""
        client_roles = {c: tuple(roles) for c, roles in data.get("client_roles", {}).items()}
        realm_roles = tuple(data.get("realm_roles", ()))
        username = data["username"].lower()
        # Unknown keys raise TypeError, so a typo in users.json fails loudly.
        return cls(
            **{
                **data,
                "username": username,
                "realm_roles": realm_roles,
                "client_roles": client_roles,
            }
        )

    def profile_claims(self) -> dict[str, Any]:
        """The profile, email and phone claims Keycloak's default mappers put in tokens."""
        given, _, family = self.name.partition(" ")
        claims = {
            "email_verified": self.email_verified,
            "name": self.name,
            "phone_number": self.phone_number,
            "preferred_username": self.username,
            "given_name": given,
            "family_name": family,
            "email": self.email,
        }
        return {k: v for k, v in claims.items() if v not in (None, "")}


def load_users(source: str | os.PathLike[str] | Iterable[Any] | None = None) -> dict[str, DevUser]:
    """Read users from a users.json path (default dev/users.json) or a list of dicts/DevUsers."""
    if source is None or isinstance(source, str | os.PathLike):
        data = json.loads(Path(source or DEFAULT_USERS_FILE).read_text(encoding="utf-8"))
        source = data["users"] if isinstance(data, dict) else data
    users = [u if isinstance(u, DevUser) else DevUser.from_dict(u) for u in source]
    return {user.username: user for user in users}
