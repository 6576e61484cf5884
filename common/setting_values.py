"""How each setting's text becomes its value: the parsers `common.settings` applies to the
environment. Each raises ValueError saying what it expected; `common.settings` adds the variable's
name.
"""

from __future__ import annotations

import ipaddress
import ssl
from urllib.parse import urlsplit

import phonenumbers
from limits import parse_many

# The longest wait for the gateway a send may have (SMS_TIMEOUT).
MAX_SMS_TIMEOUT = 30.0


def database_url(value: str) -> str:
    # Heroku hands out postgres:// URLs, which SQLAlchemy 2 rejects; psycopg 3 is our driver.
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix) :]
    if value.startswith("postgresql+psycopg://"):
        return value
    raise ValueError("expected a postgres:// or postgresql:// URL")


def redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return value


# REDIS_SSL_CERT_REQS: how a rediss:// server's certificate is checked. Heroku Redis presents a
# self-signed one, which only "none" accepts (for a client, Python's "optional" is "required").
REDIS_CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


def cert_reqs(value: str) -> str:
    choice = value.strip().lower()
    if choice not in REDIS_CERT_REQS:
        raise ValueError(f"expected one of {', '.join(REDIS_CERT_REQS)}")
    return choice


def http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


def sms_timeout(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds <= MAX_SMS_TIMEOUT:
        raise ValueError(f"expected seconds above 0 and at most {MAX_SMS_TIMEOUT:g}")
    return seconds


def names(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(","))
    if not all(names):
        raise ValueError("expected comma-separated names, none of them empty")
    return names


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive whole number")
    return number


def region(value: str) -> str:
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not a region code such as KE, UG or TZ")
    return code


def regions(value: str) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(region(code) for code in value.split(",") if code.strip()))
    if not codes:
        raise ValueError("expected region codes separated by commas, e.g. KE,UG")
    return codes


def rate_limit(value: str) -> str:
    """A Flask-Limiter limit string such as "30 per minute" or "5/minute; 10/hour"."""
    if not all(item.amount > 0 for item in parse_many(value)):
        raise ValueError("every limit needs an amount above 0")
    return value


def port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("expected a TCP port, 0 to 65535 (0: any free one)")
    return number


def count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("expected a whole number, 0 or more")
    return number


def private_or_https(url: str | None) -> bool:
    """Whether `url` is https://, or http:// to this host (a local stand-in, a sidecar)."""
    if not url or url.startswith("https://"):
        return True
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origins(value: str) -> tuple[str, ...]:
    """Browser origins such as https://shop.example.com or http://localhost:3000."""
    origins = tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())
    for origin in origins:
        scheme, _, host = origin.partition("://")
        if scheme not in ("http", "https") or not host or "/" in host or "*" in host:
            raise ValueError(f"{origin!r} is not an origin such as https://shop.example.com")
    return origins


def flag(value: str) -> bool:
    spelled = value.strip().lower()
    if spelled not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValueError("expected true or false")
    return spelled in ("true", "1", "yes", "on")
