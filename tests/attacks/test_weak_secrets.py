"""Attack: production started with secrets anyone could guess. `AT_CALLBACK_SECRET=1`, a
`SECRET_KEY` of one repeated character, a pattern, a keyboard row or a passphrase padded to
length, a Flower pair with an empty password (in any pair, not only the first), one secret
used twice, a provider's secret left `...` or cut short must stop the process at start with
the reason, naming the variable and never showing the secret; what the documented generators
print always passes.

The processes run as the Procfile starts them, over this run's PostgreSQL and Redis and the
development identity provider.
"""

from __future__ import annotations

import secrets
import subprocess

import pytest

from common.secret_checks import (
    MIN_PASSWORD_LENGTH,
    MIN_PROVIDER_SECRET_LENGTH,
    MIN_SECRET_LENGTH,
    secret_weakness,
)
from common.settings import ConfigError, Settings, check_secret
from tests.production import assert_refused_readably, production_env, refusal

STRONG = "Tk4wQz9LmR2xVb7nHs5JcY8d"  # a Flower password that passes, beside the weak pair
OTHER = "Wm3pXc8RbN6tLq2zFv9sKd4h"

# (variable, value, what the message must say)
WEAK = {
    "callback-secret-1": ("AT_CALLBACK_SECRET", "1", "AT_CALLBACK_SECRET is shorter than 32"),
    "secret-key-one-character": ("SECRET_KEY", "x" * 40, "SECRET_KEY is too easy to guess"),
    "secret-key-aaaa": ("SECRET_KEY", "a" * 64, "SECRET_KEY is too easy to guess"),
    "secret-key-abcabc": ("SECRET_KEY", "abc" * 20, "SECRET_KEY is too easy to guess"),
    "secret-key-alphabet": (
        "SECRET_KEY",
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "SECRET_KEY is too easy to guess",
    ),
    "callback-password123-repeated": (
        "AT_CALLBACK_SECRET",
        "password123" * 3,
        "AT_CALLBACK_SECRET is too easy to guess",
    ),
    "callback-password-and-digits": (
        "AT_CALLBACK_SECRET",
        "password1234567890123456789012345",
        "AT_CALLBACK_SECRET is too easy to guess",
    ),
    # Long, and rated 4 of 4 (10^10 guesses and more), yet patterns or words padded to length.
    "secret-key-keyboard-rows": (
        "SECRET_KEY",
        "qwertyuiop1234567890asdfghjklzxcvbnm",
        "SECRET_KEY is too easy to guess",
    ),
    "secret-key-passphrase": (
        "SECRET_KEY",
        "correcthorsebatterystaplecorrecthorse",
        "SECRET_KEY is too easy to guess",
    ),
    "callback-passphrase-and-digits": (
        "AT_CALLBACK_SECRET",
        "correcthorsebatterystaple1234567",
        "AT_CALLBACK_SECRET is too easy to guess",
    ),
    "metrics-token-company-words": (
        "METRICS_TOKEN",
        "DonfilesSecretKeyForProduction2024",
        "METRICS_TOKEN is too easy to guess",
    ),
    "callback-short-random": (
        "AT_CALLBACK_SECRET",
        secrets.token_hex(8),
        "AT_CALLBACK_SECRET is shorter than 32",
    ),
    "flower-empty-password": (
        "FLOWER_BASIC_AUTH",
        "admin:",
        "FLOWER_BASIC_AUTH has an empty password",
    ),
    "flower-second-pair-empty-password": (
        "FLOWER_BASIC_AUTH",
        f"ops:{STRONG},admin:",
        "FLOWER_BASIC_AUTH pair 2 has an empty password",
    ),
    "flower-trailing-comma": (
        "FLOWER_BASIC_AUTH",
        f"ops:{STRONG},",
        "FLOWER_BASIC_AUTH pair 2 is not user:password",
    ),
    "flower-empty-user": ("FLOWER_BASIC_AUTH", f":{STRONG}", "FLOWER_BASIC_AUTH has an empty user"),
    "flower-placeholder": (
        "FLOWER_BASIC_AUTH",
        "REPLACE_ME",
        "FLOWER_BASIC_AUTH is a template placeholder",
    ),
    "flower-no-colon": ("FLOWER_BASIC_AUTH", STRONG, "FLOWER_BASIC_AUTH is not user:password"),
    "flower-admin-admin": (
        "FLOWER_BASIC_AUTH",
        "admin:admin",
        "FLOWER_BASIC_AUTH has a password that is shorter than 16",
    ),
    "flower-second-pair-guessable": (
        "FLOWER_BASIC_AUTH",
        f"ops:{STRONG},admin:password12345678",
        "FLOWER_BASIC_AUTH pair 2 has a password that is too easy to guess",
    ),
    "flower-password-is-the-user": (
        "FLOWER_BASIC_AUTH",
        "operations-team:operations-team!",
        "FLOWER_BASIC_AUTH has a password that is too easy to guess",
    ),
    "flower-space-after-comma": (
        "FLOWER_BASIC_AUTH",
        f"ops:{STRONG}, admin:{OTHER}",
        "FLOWER_BASIC_AUTH pair 2 has spaces around it",
    ),
    # Issued by a provider: only whole values, never a template's words or a few characters.
    "api-key-dots": ("AT_API_KEY", "...", "AT_API_KEY is a template placeholder"),
    "api-key-change_me": ("AT_API_KEY", "CHANGE_ME", "AT_API_KEY is a template placeholder"),
    "api-key-your-key": (
        "AT_API_KEY",
        "your-africastalking-api-key",
        "AT_API_KEY is a template placeholder",
    ),
    "api-key-xxx": ("AT_API_KEY", "x" * 32, "AT_API_KEY is a template placeholder"),
    "client-secret-angle-brackets": (
        "OIDC_CLIENT_SECRET",
        "<the client secret from Keycloak>",
        "OIDC_CLIENT_SECRET is a template placeholder",
    ),
    "client-secret-short": (
        "OIDC_CLIENT_SECRET",
        "abc",
        f"OIDC_CLIENT_SECRET is shorter than {MIN_PROVIDER_SECRET_LENGTH} characters",
    ),
    "api-key-short": (
        "AT_API_KEY",
        "1234",
        f"AT_API_KEY is shorter than {MIN_PROVIDER_SECRET_LENGTH} characters",
    ),
}


@pytest.fixture
def env(database_url, idp, app):
    """`env(**changes)`: a complete production environment (over the migrated database)."""
    return lambda **changes: production_env(database_url, idp.issuer, **changes)


def _openssl_rand(*args: str) -> str:
    return subprocess.run(
        ["openssl", "rand", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


# -- the rule -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(WEAK))
def test_a_weak_secret_is_refused_with_its_reason_and_never_shown(env, case):
    name, value, reason = WEAK[case]

    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env(**{name: value}))

    message = str(refused.value)
    assert reason in message
    assert "openssl rand -hex 32" in message
    shown = {value, *value.split(","), *(pair.partition(":")[2] for pair in value.split(","))}
    assert not {part for part in shown if len(part) >= 4 and part in message}


def test_every_weak_secret_is_named_at_once(env):
    environment = env(AT_CALLBACK_SECRET="1", SECRET_KEY="x" * 40, FLOWER_BASIC_AUTH="a:,b:")

    with pytest.raises(ConfigError) as refused:
        Settings.from_env(environment)

    for reason in (
        "AT_CALLBACK_SECRET is shorter",
        "SECRET_KEY is too easy",
        "FLOWER_BASIC_AUTH pair 1 has an empty password",
        "FLOWER_BASIC_AUTH pair 2 has an empty password",
    ):
        assert reason in str(refused.value)


def test_what_the_documented_generators_print_is_accepted(env):
    chosen = {
        "SECRET_KEY": _openssl_rand("-hex", "32"),
        "AT_CALLBACK_SECRET": _openssl_rand("-hex", "32"),
        "FLOWER_BASIC_AUTH": f"ops:{_openssl_rand('-hex', '32')},admin:{secrets.token_urlsafe(32)}",
    }

    settings = Settings.from_env(env(**chosen))

    assert settings.secret_key == chosen["SECRET_KEY"]
    assert settings.at_callback_secret == chosen["AT_CALLBACK_SECRET"]
    assert settings.flower_basic_auth == chosen["FLOWER_BASIC_AUTH"]


@pytest.mark.parametrize(
    ("generate", "min_length"),
    [
        (lambda: secrets.token_hex(32), MIN_SECRET_LENGTH),  # what `openssl rand -hex 32` prints
        (lambda: secrets.token_urlsafe(32), MIN_SECRET_LENGTH),
        (lambda: secrets.token_urlsafe(24), MIN_SECRET_LENGTH),  # 32 characters, the shortest
        (lambda: secrets.token_urlsafe(12), MIN_PASSWORD_LENGTH),  # 16, a Flower password
    ],
    ids=["token_hex(32)", "token_urlsafe(32)", "token_urlsafe(24)", "token_urlsafe(12)"],
)
def test_random_secrets_pass_every_time(generate, min_length):
    weaknesses = {secret_weakness(generate(), min_length) for _ in range(25)}

    assert weaknesses == {None}


def test_every_pair_of_generated_flower_passwords_is_accepted(env):
    value = ",".join(f"user{number}:{secrets.token_urlsafe(12)}" for number in range(10))

    assert Settings.from_env(env(FLOWER_BASIC_AUTH=value)).flower_basic_auth == value


def test_provider_issued_secrets_of_their_shapes_are_accepted(env):
    # What Keycloak generates for a client, and an Africa's Talking key: nothing to guess.
    issued = {"OIDC_CLIENT_SECRET": secrets.token_urlsafe(24), "AT_API_KEY": secrets.token_hex(32)}

    settings = Settings.from_env(env(**issued))

    assert (settings.oidc_client_secret, settings.at_api_key) == tuple(issued.values())


# -- one secret in two places -------------------------------------------------------------

SHARED = secrets.token_hex(32)
# (the environment's changes, what the message must say)
REUSED = {
    "callback-is-the-secret-key": (
        {"SECRET_KEY": SHARED, "AT_CALLBACK_SECRET": SHARED},
        "AT_CALLBACK_SECRET reuses SECRET_KEY",
    ),
    "metrics-token-is-the-callback-secret": (
        {"AT_CALLBACK_SECRET": SHARED, "METRICS_TOKEN": SHARED},
        "METRICS_TOKEN reuses AT_CALLBACK_SECRET",
    ),
    "flower-password-is-the-secret-key": (
        {"SECRET_KEY": SHARED, "FLOWER_BASIC_AUTH": f"ops:{SHARED}"},
        "FLOWER_BASIC_AUTH's password reuses SECRET_KEY",
    ),
    "flower-password-is-part-of-the-metrics-token": (
        {"METRICS_TOKEN": SHARED, "FLOWER_BASIC_AUTH": f"ops:{STRONG},audit:{SHARED[:24]}"},
        "FLOWER_BASIC_AUTH pair 2's password reuses METRICS_TOKEN",
    ),
    "two-flower-users-one-password": (
        {"FLOWER_BASIC_AUTH": f"ops:{STRONG},audit:{STRONG}"},
        "FLOWER_BASIC_AUTH pair 2's password reuses FLOWER_BASIC_AUTH pair 1's password",
    ),
    "client-secret-is-the-secret-key": (
        {"SECRET_KEY": SHARED, "OIDC_CLIENT_SECRET": SHARED},
        "OIDC_CLIENT_SECRET reuses SECRET_KEY",
    ),
    "metrics-token-is-the-secret-key-upper-cased": (
        {"SECRET_KEY": SHARED, "METRICS_TOKEN": SHARED.upper()},
        "METRICS_TOKEN reuses SECRET_KEY",
    ),
}


@pytest.mark.parametrize("case", list(REUSED))
def test_a_secret_used_twice_is_refused_naming_both(env, case):
    changes, reason = REUSED[case]

    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env(**changes))

    assert reason in str(refused.value)
    assert SHARED[:16] not in str(refused.value)
    assert STRONG not in str(refused.value)


def test_each_strong_secret_of_its_own_is_accepted(env):
    # The control for the test above: the same kinds of value, none of them twice.
    chosen = {name: secrets.token_hex(32) for name in ("SECRET_KEY", "AT_CALLBACK_SECRET")}
    chosen["METRICS_TOKEN"] = secrets.token_hex(32)
    chosen["FLOWER_BASIC_AUTH"] = f"ops:{STRONG},audit:{OTHER}"

    settings = Settings.from_env(env(**chosen))

    assert settings.metrics_token == chosen["METRICS_TOKEN"]


def test_check_secret_names_the_variable_and_the_reason():
    with pytest.raises(ConfigError, match=r"^METRICS_TOKEN is not set"):
        check_secret("METRICS_TOKEN", None)
    with pytest.raises(ConfigError, match=r"^METRICS_TOKEN is shorter than 32 characters"):
        check_secret("METRICS_TOKEN", "tok")
    with pytest.raises(ConfigError, match=r"^METRICS_TOKEN is too easy to guess") as refused:
        check_secret("METRICS_TOKEN", "metrics-metrics-metrics-metrics-")
    assert "metrics-" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"^METRICS_TOKEN is a template placeholder"):
        check_secret("METRICS_TOKEN", "change-me-please-to-something-long")

    check_secret("METRICS_TOKEN", secrets.token_hex(32))
    check_secret("METRICS_TOKEN", secrets.token_urlsafe(12), min_length=MIN_PASSWORD_LENGTH)


# -- the processes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("process", "case"),
    [
        ("web", "callback-secret-1"),
        ("worker", "secret-key-one-character"),
        ("flower", "flower-second-pair-empty-password"),
        # Flower splits on commas: the empty last pair let `Authorization: Basic =` in.
        ("flower", "flower-trailing-comma"),
        ("release", "callback-password123-repeated"),
        ("web", "secret-key-passphrase"),
        ("worker", "api-key-dots"),
    ],
)
def test_a_process_with_a_weak_secret_refuses_to_start(env, process, case):
    name, value, reason = WEAK[case]

    refused = refusal(process, env(**{name: value}))

    assert_refused_readably(refused, reason)
    if len(value) >= 4:
        assert value not in refused.output
    assert STRONG not in refused.output


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("OIDC_ISSUER", "http://sso.example.com/realms/shop"),
        ("AT_API_URL", "http://api.africastalking.com"),
    ],
)
def test_production_refuses_plain_http_to_another_host(env, variable, url):
    """Signing keys fetched, or API keys sent, over plain http:// can be forged or read on the
    way; http:// to this host (a local stand-in, a sidecar) stays allowed."""
    with pytest.raises(ConfigError, match=f"{variable} must be https://"):
        Settings.from_env(env(**{variable: url}))


def test_production_takes_http_to_this_host(env):
    settings = Settings.from_env(env(AT_API_URL="http://127.0.0.1:8090"))

    assert settings.at_api_url == "http://127.0.0.1:8090"
