"""What production refuses as a secret (common/settings.py runs these checks at start).

Secrets the operator makes up must be long, hard to guess and each its own: a guessable
`SECRET_KEY` can be found offline from one signed value, and one value in two places leaks
with either. Secrets a provider issues can only be checked for being whole: no template
placeholder, not a few characters typed by hand. No reason ever contains the secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import combinations

from zxcvbn import zxcvbn

# Generated once and pasted (SECRET_KEY, AT_CALLBACK_SECRET, METRICS_TOKEN).
MIN_SECRET_LENGTH = 32
# zxcvbn's estimate of the guesses such a secret takes: a random 32 characters rate about
# 10^30, while words, a passphrase or a keyboard row padded to 32 characters rate 10^4 to
# 10^24. 10^25 guesses outlast an offline search at 10^12 a second for 300,000 years.
MIN_SECRET_GUESSES_LOG10 = 25
# Flower's passwords are typed by people into a browser's prompt, and can only be guessed
# online: the top of zxcvbn's scale (10^10 guesses, once it has tried repeats, sequences,
# keyboard rows, dates, words and common passwords) will do.
MIN_PASSWORD_LENGTH = 16
STRONG_SCORE = 4
# Keycloak's client secrets have 32 characters, Africa's Talking's API keys more.
MIN_PROVIDER_SECRET_LENGTH = 16
# zxcvbn reads at most 72 characters.
ZXCVBN_MAX_LENGTH = 72
# How values shipped in templates and examples start: never a real secret.
PLACEHOLDERS = (
    "change-me",
    "change_me",
    "changeme",
    "replace-me",
    "replace_me",
    "replaceme",
    "set-me",
    "set_me",
    "your-",
    "your_",
    "<",
)


def is_placeholder(value: str) -> bool:
    """Whether `value` is what a template says in place of a secret: `change-me...`,
    `<your key>`, `...`."""
    text = value.strip().lower()
    return text.startswith(PLACEHOLDERS) or not any(character.isalnum() for character in text)


def secret_weakness(
    value: str, min_length: int = MIN_SECRET_LENGTH, related: Iterable[str] = ()
) -> str | None:
    """Why `value` will not do as a secret an operator makes up (a placeholder, shorter than
    `min_length`, or easy to guess, also from the `related` words), or None when it will.
    A secret of MIN_SECRET_LENGTH or more needs MIN_SECRET_GUESSES_LOG10, a shorter one
    (a Flower password) zxcvbn's top score."""
    if is_placeholder(value):
        return "is a template placeholder"
    if len(value) < min_length:
        return f"is shorter than {min_length} characters"
    # A prefix that is hard to guess keeps the whole value so.
    verdict = zxcvbn(value[:ZXCVBN_MAX_LENGTH], user_inputs=list(related))
    if min_length >= MIN_SECRET_LENGTH:
        weak = verdict["guesses_log10"] < MIN_SECRET_GUESSES_LOG10
    else:
        weak = verdict["score"] < STRONG_SCORE
    if weak:
        hint = verdict["feedback"]["warning"] or "it follows a guessable pattern"
        return f"is too easy to guess ({hint.rstrip('.')})"
    return None


def provider_secret_weakness(value: str) -> str | None:
    """Why `value` cannot be a secret a provider issued (a placeholder, or shorter than
    MIN_PROVIDER_SECRET_LENGTH), or None."""
    # One character repeated (`xxxx...`) fills a template's blank too.
    if is_placeholder(value) or len(set(value)) == 1:
        return "is a template placeholder"
    if len(value) < MIN_PROVIDER_SECRET_LENGTH:
        return (
            f"is shorter than {MIN_PROVIDER_SECRET_LENGTH} characters"
            " (not the whole secret the provider issued)"
        )
    return None


def _flower_pairs(value: str) -> list[tuple[str, str]]:
    """Each pair of FLOWER_BASIC_AUTH, split on commas as Flower splits it (spaces kept),
    with how reasons name it."""
    pairs = value.split(",")
    if len(pairs) == 1:
        return [("FLOWER_BASIC_AUTH", value)]
    return [(f"FLOWER_BASIC_AUTH pair {number}", pair) for number, pair in enumerate(pairs, 1)]


def flower_auth_weaknesses(value: str) -> list[str]:
    """What is wrong with each `user:password` pair of FLOWER_BASIC_AUTH; empty when every
    pair will do."""
    if is_placeholder(value):
        return ["FLOWER_BASIC_AUTH is a template placeholder"]
    weaknesses = []
    for where, pair in _flower_pairs(value):
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


def reuses(secrets: Mapping[str, str | None]) -> list[str]:
    """Each secret of `secrets` (by name) that is another one, or holds or is held in it.
    Values too short to be any secret are refused for that alone."""
    # In any case: a secret upper-cased is the same secret to whoever holds the other.
    given = [
        (name, value.casefold())
        for name, value in secrets.items()
        if value and len(value) >= MIN_PASSWORD_LENGTH
    ]
    return [
        f"{later} reuses {earlier}"
        for (earlier, first), (later, second) in combinations(given, 2)
        if first in second or second in first
    ]


def production_weaknesses(
    *,
    operator: Mapping[str, tuple[str | None, int]],
    provider: Mapping[str, str | None],
    flower_basic_auth: str,
) -> list[str]:
    """Every reason the secrets refuse production: the `operator`'s own (name -> value and
    the length it needs; unset passes, so it may be optional), the `provider`'s (unset
    passes) and Flower's pairs; empty when they will all do."""
    weaknesses = []
    for name, value in provider.items():
        weakness = provider_secret_weakness(value) if value else None
        if weakness:
            weaknesses.append(f"{name} {weakness}")
    for name, (value, min_length) in operator.items():
        weakness = secret_weakness(value, min_length) if value else None
        if weakness:
            weaknesses.append(f"{name} {weakness}")
    weaknesses += flower_auth_weaknesses(flower_basic_auth)
    passwords = {
        f"{where}'s password": pair.partition(":")[2]
        for where, pair in _flower_pairs(flower_basic_auth)
    }
    every = {**{name: value for name, (value, _) in operator.items()}, **passwords, **provider}
    return weaknesses + reuses(every)
