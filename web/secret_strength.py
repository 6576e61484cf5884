"""How strong a secret the operator makes up is: long enough, no template placeholder, and
hard to guess (zxcvbn). `web.config` refuses weak ones in production; the reasons it gives never
contain the secret.
"""

from __future__ import annotations

from collections.abc import Iterable

from zxcvbn import zxcvbn

# The length a secret the operator makes up needs.
MIN_SECRET_LENGTH = 32
# Flower's passwords are typed by people into a browser's prompt; the others are generated
# once and pasted.
MIN_PASSWORD_LENGTH = 16
# The top of zxcvbn's scale (at least 10^10 guesses once it has tried repeats, sequences,
# keyboard rows, dates, words and common passwords); it reads at most 72 characters.
STRONG_SCORE = 4
ZXCVBN_MAX_LENGTH = 72
GENERATE_HINT = "generate each secret with `openssl rand -hex 32`"
# Values shipped in templates and examples: never a real secret.
PLACEHOLDERS = ("change-me", "changeme", "replace_me", "replace-me", "set-me")


def is_placeholder(value: str) -> bool:
    """Whether `value` is a placeholder of a template (e.g. change-me...), never a secret."""
    return value.lower().startswith(PLACEHOLDERS)


def secret_weakness(
    value: str, min_length: int = MIN_SECRET_LENGTH, related: Iterable[str] = ()
) -> str | None:
    """Why `value` will not do as a secret an operator makes up (a placeholder, shorter than
    `min_length`, or easy to guess, also from the `related` words), or None when it will.
    The reason never contains the value."""
    if is_placeholder(value):
        return "is a template placeholder"
    if len(value) < min_length:
        return f"is shorter than {min_length} characters"
    # A prefix that is hard to guess keeps the whole value so.
    verdict = zxcvbn(value[:ZXCVBN_MAX_LENGTH], user_inputs=list(related))
    if verdict["score"] < STRONG_SCORE:
        hint = verdict["feedback"]["warning"] or "it follows a guessable pattern"
        return f"is too easy to guess ({hint.rstrip('.')})"
    return None


def flower_auth_weaknesses(value: str) -> list[str]:
    """What is wrong with each `user:password` pair of FLOWER_BASIC_AUTH, split on commas as
    Flower splits it (spaces kept); empty when every pair will do."""
    if is_placeholder(value):
        return ["FLOWER_BASIC_AUTH is a template placeholder"]
    pairs = value.split(",")
    weaknesses = []
    for number, pair in enumerate(pairs, start=1):
        where = f"FLOWER_BASIC_AUTH pair {number}" if len(pairs) > 1 else "FLOWER_BASIC_AUTH"
        user, colon, password = pair.partition(":")
        if not colon:
            weakness = f"{where} is not user:password"
        elif pair != pair.strip():
            weakness = f"{where} has spaces around it, which Flower would keep"
        elif not user:
            weakness = f"{where} has an empty user"
        elif not password:
            weakness = f"{where} has an empty password"
        else:
            found = secret_weakness(password, MIN_PASSWORD_LENGTH, related=[user])
            weakness = f"{where} has a password that {found}" if found else None
        if weakness:
            weaknesses.append(weakness)
    return weaknesses
