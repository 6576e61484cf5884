"""The text of an SMS: what each order change tells the customer, within one SMS."""

from __future__ import annotations

import uuid
from decimal import Decimal

from models.notifications import NotificationKind

SMS_LIMIT = 160


def short_reference(order_id: uuid.UUID) -> str:
    """The order reference a customer sees in an SMS: the first 8 hex digits of its id."""
    return order_id.hex[:8].upper()


# GSM 03.38: a message of these characters fits 160 to an SMS; any other character makes it
# UCS-2, 70 to an SMS. The extension characters count twice.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€")
# Curly quotes, dashes and ellipses, as phones and word processors type them, in GSM-7.
TYPOGRAPHY = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
    }
)


GSM7 = GSM7_BASIC | GSM7_EXTENSION


def sms_length(text: str) -> tuple[int, int]:
    """(characters as the network counts them, how many fit one SMS) for `text`."""
    if GSM7.issuperset(text):
        return len(text) + sum(map(text.count, GSM7_EXTENSION)), SMS_LIMIT
    return len(text), 70


def message_body(
    kind: NotificationKind, *, company: str, order_id: uuid.UUID, total: Decimal, currency: str
) -> str:
    """The SMS text: company, a short order reference and the total, within one SMS."""
    reference = short_reference(order_id)
    amount = f"{currency} {total:,.2f}"
    text = {
        NotificationKind.ORDER_PLACED: f"{company}: order {reference} for {amount} received. "
        "We will confirm it shortly.",
        NotificationKind.ORDER_CONFIRMED: f"{company}: order {reference} for {amount} is "
        "confirmed. Thank you!",
        NotificationKind.ORDER_CANCELLED: f"{company}: order {reference} for {amount} has "
        "been cancelled.",
    }[kind].translate(TYPOGRAPHY)
    length, fits = sms_length(text)
    if length > fits:  # a long or non-GSM company name: keep what matters
        text = f"Order {reference} ({amount}): {kind.removeprefix('ORDER_').lower()}."
    return text
