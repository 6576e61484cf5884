"""Customers: the table and the operations that create, change and find them."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.actors import Actor
from models.db import UpdatedTimestamp, UUIDPrimaryKey, db
from models.errors import DomainError, ErrorCode, ErrorCollector
from models.pagination import Page, paginate
from models.validation import (
    MAX_CODE,
    MAX_NAME,
    clean_email,
    clean_phone,
    clean_text,
    parse_uuid,
    storable,
)

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
CODE_ATTEMPTS = 5
UNSET = object()


class Customer(db.Model):
    __tablename__ = "customers"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy reads a dict

    id: Mapped[UUIDPrimaryKey]
    code: Mapped[str] = mapped_column(String(MAX_CODE), unique=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME))
    phone: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(254))
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    # The identity provider's claims as last seen, to tell a changed claim from a local edit.
    oidc_claims: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp(), index=True
    )
    updated_at: Mapped[UpdatedTimestamp]


def generate_code() -> str:
    """A short random customer code such as `C7K2M9QXA`."""
    return "C" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))


def _insert_customer(session: Session, values: dict[str, object], code: str | None) -> Customer:
    """INSERT a customer; a given code that is taken is DUPLICATE, a generated one is redrawn."""
    for _ in range(CODE_ATTEMPTS):
        statement = (
            insert(Customer)
            .values(id=values.get("id") or uuid.uuid4(), code=code or generate_code(), **values)
            .on_conflict_do_nothing(index_elements=[Customer.code])
            .returning(Customer)
        )
        customer = session.scalars(statement).one_or_none()
        if customer is not None:
            return customer
        if code is not None:
            raise DomainError.single("code", ErrorCode.DUPLICATE, f"code {code} is already taken")
    raise RuntimeError("could not draw a free customer code")  # pragma: no cover - 32^8 codes


def create_customer(
    session: Session,
    *,
    actor: Actor,
    name: str | None,
    phone: str | None = None,
    email: str | None = None,
    code: str | None = None,
    region: str = "KE",
    allowed_regions: Collection[str] = (),
) -> Customer:
    """Create a customer (admins only); the code is generated when not given. A phone must be
    of `allowed_regions` (default: `region` alone), the only ones that get an SMS."""
    actor.require_admin()
    errors = ErrorCollector()
    values = {
        "name": clean_text(errors, "name", name, limit=MAX_NAME, required=True),
        "phone": clean_phone(errors, "phone", phone, region, allowed_regions or (region,)),
        "email": clean_email(errors, "email", email),
    }
    code = clean_text(errors, "code", code, limit=MAX_CODE)
    if code is not None and not all(c.isalnum() or c in "-_" for c in code):
        errors.add("code", ErrorCode.INVALID, "code may hold letters, digits, - and _ only")
    errors.raise_if_any()
    return _insert_customer(session, values, code)


def update_customer(
    session: Session,
    *,
    actor: Actor,
    customer_id: object,
    name: object = UNSET,
    phone: object = UNSET,
    email: object = UNSET,
    region: str = "KE",
    allowed_regions: Collection[str] = (),
) -> Customer:
    """Change a customer's name, phone or e-mail (its own record, or any for an admin); a
    phone as in `create_customer`."""
    customer = get_customer(session, actor=actor, customer_id=customer_id)
    errors = ErrorCollector()
    if name is not UNSET:
        customer.name = clean_text(errors, "name", name, limit=MAX_NAME, required=True)
    if phone is not UNSET:
        customer.phone = clean_phone(errors, "phone", phone, region, allowed_regions or (region,))
    if email is not UNSET:
        customer.email = clean_email(errors, "email", email)
    errors.raise_if_any()
    session.flush()
    return customer


def _visible(actor: Actor, customer: Customer | None) -> Customer:
    # Another customer's record answers NOT_FOUND, not FORBIDDEN, so ids cannot be probed.
    if customer is None or not actor.may_see(customer.id):
        raise DomainError.single(None, ErrorCode.NOT_FOUND, "customer not found")
    return customer


def get_customer(session: Session, *, actor: Actor, customer_id: object) -> Customer:
    """The customer with this id, if the actor may see it."""
    key = parse_uuid(customer_id)
    if key is None:
        raise DomainError.single("id", ErrorCode.INVALID, "id is not a valid customer id")
    return _visible(actor, session.get(Customer, key))


def get_customer_by_code(session: Session, *, actor: Actor, code: str) -> Customer:
    """The customer with this code, if the actor may see it."""
    if not storable(code):
        return _visible(actor, None)
    customer = session.scalars(select(Customer).where(Customer.code == code.strip())).first()
    return _visible(actor, customer)


def find_customer(session: Session, *, actor: Actor, reference: str, field: str) -> Customer:
    """A customer named by OIDC subject, id or code, as a client may pass any of them."""
    if not storable(reference):
        raise DomainError.single(field, ErrorCode.NOT_FOUND, "customer not found")
    clauses = [Customer.oidc_subject == reference, Customer.code == reference]
    if (key := parse_uuid(reference)) is not None:
        clauses.append(Customer.id == key)
    for clause in clauses:
        customer = session.scalars(select(Customer).where(clause)).first()
        if customer is not None and actor.may_see(customer.id):
            return customer
    raise DomainError.single(field, ErrorCode.NOT_FOUND, "customer not found")


def customer_for_order(
    session: Session,
    *,
    actor: Actor,
    customer_id: str | None,
    customer_code: str | None,
    user_id: str | None,
) -> uuid.UUID:
    """The id of the customer an order is for, named once by customerId, customerCode or
    userId (an OIDC subject); the caller itself when none is given."""
    given = [
        (field, value)
        for field, value in (
            ("customerId", customer_id),
            ("customerCode", customer_code),
            ("userId", user_id),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise DomainError.single(
            given[1][0],
            ErrorCode.INVALID,
            "name the customer once: customerId, customerCode or userId",
        )
    field, value = given[0] if given else ("customerId", None)
    if value is None or (field == "userId" and value.strip() == actor.subject):
        # The caller itself: its customer was provisioned when the request authenticated.
        if actor.customer_id is None:
            raise DomainError.single("customerId", ErrorCode.INVALID, "customerId is required")
        return actor.customer_id
    if field == "customerId" and parse_uuid(value) is None:
        raise DomainError.single(field, ErrorCode.INVALID, "customerId is not a valid id")
    return find_customer(session, actor=actor, reference=value.strip(), field=field).id


def list_customers(
    session: Session,
    *,
    actor: Actor,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Page[Customer]:
    """Customers newest first: every one for an admin, the caller's own record otherwise;
    paged as `paginate` does."""
    query = select(Customer).where(actor.sees(Customer.id))
    return paginate(
        session,
        query,
        created_at=Customer.created_at,
        row_id=Customer.id,
        first=first,
        after=after,
        last=last,
        before=before,
    )


def provision_customer(
    session: Session,
    *,
    subject: str,
    name: object,
    email: object,
    phone: object,
    region: str = "KE",
    allowed_regions: Collection[str] = (),
) -> Customer:
    """The customer for an OIDC subject, created on first sight and kept in step with its
    claims. Concurrent first requests create one customer: the loser of the INSERT race waits
    for the winner's commit, then finds its row.

    A field follows its claim only when the claim itself changes, so an edit made through
    `updateCustomer` stays until the identity provider says something new. A phone outside
    `allowed_regions` (default: `region` alone) is a claim we cannot use."""
    errors = ErrorCollector()  # claims we cannot use are dropped, never fatal
    allowed = allowed_regions or (region,)
    claims = {
        "name": clean_text(errors, "name", _claim(name), limit=MAX_NAME),
        "email": clean_email(errors, "email", _claim(email)),
        "phone": clean_phone(errors, "phone", _claim(phone), region, allowed),
    }
    customer = session.scalars(select(Customer).where(Customer.oidc_subject == subject)).first()
    if customer is None:
        customer = _insert_provisioned(session, subject, claims)
        if customer.oidc_claims == claims:
            return customer  # ours: just created from these very claims
    seen = customer.oidc_claims or {}
    changed = {
        field: value
        for field, value in claims.items()
        if value and value != seen.get(field) and value != getattr(customer, field)
    }
    if changed or seen != claims:
        for field, value in changed.items():
            setattr(customer, field, value)
        customer.oidc_claims = claims
        session.flush()
    return customer


def _claim(value: object) -> str | None:
    # Keycloak mappers may emit a phone number as a JSON number.
    if isinstance(value, bool) or value is None:
        return None
    return value if isinstance(value, str) else str(value) if isinstance(value, int) else None


def _insert_provisioned(session: Session, subject: str, claims: dict[str, str | None]) -> Customer:
    key = parse_uuid(subject)
    for _ in range(CODE_ATTEMPTS):
        statement = (
            insert(Customer)
            .values(
                id=key or uuid.uuid4(),
                code=generate_code(),
                oidc_subject=subject,
                oidc_claims=claims,
                name=claims["name"] or "Customer",
                email=claims["email"],
                phone=claims["phone"],
            )
            .on_conflict_do_nothing()
            .returning(Customer)
        )
        customer = session.scalars(statement).one_or_none()
        if customer is None:  # lost a race for the subject, or the id or code was taken
            customer = session.scalars(
                select(Customer).where(Customer.oidc_subject == subject)
            ).first()
        if customer is not None:
            return customer
        key = None  # the id (or code) belongs to another customer: draw fresh ones
    raise RuntimeError("could not provision a customer")  # pragma: no cover - 5 collisions
