"""Parsing and limits shared by the domain functions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TypeVar

import phonenumbers

from models.errors import DomainError, ErrorCode, ErrorCollector

Choice = TypeVar("Choice", bound=StrEnum)

MAX_NAME = 200
MAX_DETAILS = 2000
MAX_CODE = 32
MAX_EMAIL = 254
MAX_ITEM = 200
MAX_SUBJECT = 255  # a user's subject at the identity provider, as orders record it
MAX_QUANTITY = 100_000
MAX_AMOUNT = Decimal("1000000000")  # 10^9: above this a price is a typo, not an order
CENT = Decimal("0.01")
SURROGATE = re.compile(r"[\ud800-\udfff]")


def parse_choice(choices: type[Choice], value: str | None, field: str = "status") -> Choice | None:
    """The member of `choices` (a status, say) that `value` names in any letter case; None
    for no value; a DomainError (INVALID) listing the choices for anything else."""
    if value is None or not value.strip():
        return None
    try:
        return choices(value.strip().upper())
    except ValueError:
        names = ", ".join(choices)
        raise DomainError.single(
            field, ErrorCode.INVALID, f"{field} must be one of {names}"
        ) from None


# The one way ids are written: 8-4-4-4-12 ASCII hex digits, in either case. Python's UUID
# also reads braces, `urn:uuid:`, no hyphens, and other scripts' digits (full-width ones,
# Arabic-Indic ones): ids no client was given, which must not find an order all the same.
CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def parse_uuid(value: object) -> uuid.UUID | None:
    """The UUID in `value` written as `CANONICAL_UUID`, or None when it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or not CANONICAL_UUID.fullmatch(value):
        return None
    return uuid.UUID(value)


def storable(value: str) -> bool:
    """Whether PostgreSQL text can hold `value`: no NUL, and no lone UTF-16 surrogate (JSON's
    `\\ud800` escape makes one, and UTF-8 cannot encode it). A value that is not storable can
    match nothing we store, and must never reach a query."""
    return "\x00" not in value and not SURROGATE.search(value)


def normalize_phone(raw: str, region: str) -> str | None:
    """`raw` as an E.164 number (default region for local numbers), or None if invalid."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Numbers whose owner earns from the messages they receive: SMS pumping's payday.
PREMIUM = {
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    phonenumbers.PhoneNumberType.SHARED_COST: "a shared-cost number",
}


def sms_refusal(phone: str, allowed: Collection[str]) -> str | None:
    """Why no SMS may go to E.164 `phone`, or None when it may: its region must be one of
    `allowed` (an SMS abroad costs the shop more, and numbers abroad are how SMS pumping pays),
    and it must not be a number that charges for what it receives."""
    number = phonenumbers.parse(phone)
    region = phonenumbers.region_code_for_number(number)
    if region not in allowed:
        where = (
            f"a number of {region}" if region and region != "001" else "not a number of a country"
        )
        return f"{where}, and SMS go only to {', '.join(allowed)} (SMS_ALLOWED_REGIONS)"
    if kind := PREMIUM.get(phonenumbers.number_type(number)):
        return f"{kind}, which gets no SMS"
    return None


def clean_text(
    errors: ErrorCollector,
    field: str,
    value: str | None,
    *,
    limit: int,
    required: bool = False,
) -> str | None:
    """Strip `value` and check its length; record an INVALID error and return None if bad."""
    if value is None:
        if required:
            errors.add(field, ErrorCode.INVALID, f"{field} is required")
        return None
    text = value.strip()
    if any(ord(character) < 32 and character not in "\t\n\r" for character in text):
        errors.add(field, ErrorCode.INVALID, f"{field} must not contain control characters")
        return None
    if not storable(text):
        errors.add(field, ErrorCode.INVALID, f"{field} must be valid Unicode text")
        return None
    if not text:
        if required:
            errors.add(field, ErrorCode.INVALID, f"{field} must not be empty")
        return None
    if len(text) > limit:
        errors.add(field, ErrorCode.INVALID, f"{field} must be at most {limit} characters")
        return None
    return text


def clean_phone(
    errors: ErrorCollector,
    field: str,
    value: str | None,
    region: str,
    allowed: Collection[str] | None = None,
) -> str | None:
    """Normalise a phone number to E.164 or record why it cannot be; with `allowed`, a number
    outside those regions is refused too."""
    text = clean_text(errors, field, value, limit=40)
    if text is None:
        return None
    phone = normalize_phone(text, region)
    if phone is None:
        errors.add(field, ErrorCode.INVALID, f"{field} is not a valid phone number")
    elif allowed is not None and (refusal := sms_refusal(phone, allowed)):
        errors.add(field, ErrorCode.INVALID, f"{field} is {refusal}")
        return None
    return phone


def clean_email(errors: ErrorCollector, field: str, value: str | None) -> str | None:
    """A plausible e-mail address (one @, something either side), lower-cased domain."""
    text = clean_text(errors, field, value, limit=MAX_EMAIL)
    if text is None:
        return None
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or " " in text:
        errors.add(field, ErrorCode.INVALID, f"{field} is not a valid e-mail address")
        return None
    return f"{local}@{domain.lower()}"


def clean_money(errors: ErrorCollector, field: str, value: object) -> Decimal | None:
    """A positive amount with at most two decimals and at most 10^9."""
    if value is None:
        return None
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        errors.add(field, ErrorCode.INVALID, f"{field} is not a number")
        return None
    if not amount.is_finite() or amount <= 0:
        errors.add(field, ErrorCode.INVALID, f"{field} must be greater than zero")
        return None
    if amount > MAX_AMOUNT:
        errors.add(field, ErrorCode.INVALID, f"{field} must be at most {MAX_AMOUNT:,}")
        return None
    if amount != amount.quantize(CENT):
        errors.add(field, ErrorCode.INVALID, f"{field} has more than two decimal places")
        return None
    return amount.quantize(CENT)


def clean_currency(errors: ErrorCollector, field: str, value: str | None, default: str) -> str:
    """An ISO 4217-shaped currency code (three letters), upper-cased."""
    if value is None:
        return default
    code = value.strip().upper()
    if len(code) != 3 or not code.isalpha() or not code.isascii():
        errors.add(field, ErrorCode.INVALID, f"{field} must be a three-letter currency code")
        return default
    return code
