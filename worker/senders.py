"""SMS senders: one small interface, Africa's Talking for real, the console for development.

A sender never raises for a gateway problem: it returns a `SendResult` saying what happened
and what kind of outcome it is, and the task decides what to do with the notification.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

import requests
import urllib3
from africastalking.SMS import SMSService

from common.settings import Settings

log = logging.getLogger(__name__)


class Outcome(Enum):
    ACCEPTED = "accepted"  # the gateway took the message: SENT
    RETRY = "retry"  # may succeed later: back to QUEUED with backoff
    RETRY_OPERATOR = "retry_operator"  # retried too, but someone must act (balance, sender id)
    PERMANENT = "permanent"  # will never succeed as it is: FAILED now
    BAD_CREDENTIALS = "bad_credentials"  # our configuration is wrong: FAILED, loudly
    # Sent, and no reply in time (or the connection dropped before it): retried like RETRY,
    # but the gateway may have taken the message, so the retry may make a duplicate.
    UNANSWERED = "unanswered"


# Africa's Talking per-recipient status codes.
ACCEPTED_CODES = {100, 101, 102}  # Processed, Success, Queued
RETRY_CODES = {500, 501, 502}  # InternalServerError, GatewayError, RejectedByGateway
OPERATOR_CODES = {401, 402, 405}  # RiskHold, InvalidSenderId, InsufficientBalance
PERMANENT_CODES = {403, 404, 406, 407, 409}  # bad number, blacklisted, unroutable, DND


def _reached(error: requests.RequestException) -> bool:
    """Whether a failed call may have reached the gateway: not when no connection was made
    (refused, unknown host, connect timeout)."""
    if isinstance(error, requests.ConnectTimeout):
        return False
    cause = _cause(error)
    # urllib3 counts a refused connection or an unknown host (NewConnectionError) as a
    # connect timeout; a TLS handshake that failed sent nothing either.
    unsent = urllib3.exceptions.ConnectTimeoutError | urllib3.exceptions.SSLError
    return not isinstance(cause, unsent | requests.RequestException)


def _cause(error: requests.RequestException) -> BaseException:
    """The urllib3 error inside what `requests` raised (itself when there is none)."""
    cause = error.args[0] if error.args and isinstance(error.args[0], BaseException) else error
    return cause.reason if isinstance(cause, urllib3.exceptions.MaxRetryError) else cause


# Messages of a reply refusing the whole request (no recipients) that an operator must fix.
OPERATOR_MESSAGES = {"InvalidSenderId", "InsufficientBalance", "RiskHold"}
KEPT_CONNECTIONS = 1024  # above the 640 sends a worker of 32 pool threads has in flight


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    started_at: datetime
    duration_ms: int
    http_status: int | None = None
    status_code: int | None = None
    status: str | None = None
    message_id: str | None = None
    cost: str | None = None
    error: str | None = None
    raw_reply: str | None = None


class SmsSender(Protocol):
    def send(self, phone: str, message: str) -> SendResult: ...


class ConsoleSender:
    """Development: logs the message instead of sending it, and calls it accepted."""

    def send(self, phone: str, message: str) -> SendResult:
        log.info("SMS (console sender, not sent) to %s: %s", phone, message)
        return SendResult(
            outcome=Outcome.ACCEPTED,
            started_at=datetime.now(UTC),
            duration_ms=0,
            status_code=101,
            status="Success",
            message_id=f"console-{uuid.uuid4().hex}",  # unique across the send threads
            cost="KES 0",
        )


class _GatewaySMSService(SMSService):
    """The SDK's SMS service with the two things africastalking 2.0.3 cannot do publicly: send
    to a base URL of our choosing (AT_API_URL; the SDK knows only Africa's Talking's live and
    sandbox hosts), and hand back the gateway's HTTP reply (its public `send` raises every
    non-2xx reply as an exception holding only the body, so a 401, our credentials, could not
    be told from a 503, the gateway's trouble). The SDK still builds the request: its URL,
    headers, form and the check of the number."""

    def __init__(self, username: str, api_key: str, base_url: str | None) -> None:
        super().__init__(username, api_key)
        if base_url:
            self._baseUrl = f"{base_url.rstrip('/')}/version1"
        self.http = requests.Session()
        # The environment's proxy and CA settings (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE,
        # ...) are read once for the gateway's URL, not on every send.
        found = self.http.merge_environment_settings(self._baseUrl, {}, None, None, None)
        self.http.trust_env = False
        self.http.proxies, self.http.verify = found["proxies"], found["verify"]
        # A connection is kept for each send that was in flight at once (a worker process's
        # tasks times TASK_BATCH), up to KEPT_CONNECTIONS; one over that is closed after use.
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=KEPT_CONNECTIONS)
        self.http.mount("https://", adapter)
        self.http.mount("http://", adapter)

    def _make_request(self, url, method, headers, data, params, callback=None, timeout=None):  # type: ignore[override]
        # One send is one attempt (no retries), and a redirect is an answer to report.
        return self.http.request(
            method,
            url,
            headers=headers,
            data=data,
            params=params,
            timeout=timeout,
            allow_redirects=False,
        )


class AfricasTalkingSender:
    """Sends through the `africastalking` SDK to the live API, the sandbox, or AT_API_URL."""

    def __init__(
        self,
        *,
        username: str,
        api_key: str,
        sender_id: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.service = _GatewaySMSService(username, api_key, base_url)
        self.sender_id = sender_id
        self.timeout = (3.05, timeout)

    def send(self, phone: str, message: str) -> SendResult:
        started = datetime.now(UTC)
        clock = time.monotonic()

        def result(outcome: Outcome, **fields: Any) -> SendResult:
            elapsed = int((time.monotonic() - clock) * 1000)
            return SendResult(outcome=outcome, started_at=started, duration_ms=elapsed, **fields)

        try:
            response = self.service.send(
                message, [phone], sender_id=self.sender_id, timeout=self.timeout
            )
        except requests.RequestException as error:
            if not _reached(error):
                return result(
                    Outcome.RETRY,
                    error=f"could not reach the gateway: {type(_cause(error)).__name__}",
                )
            if isinstance(error, requests.Timeout):
                return result(
                    Outcome.UNANSWERED,
                    error="the gateway did not answer in time; it may have the message",
                )
            return result(
                Outcome.UNANSWERED,
                error=f"the gateway's reply was cut off ({type(_cause(error)).__name__}); "
                "it may have the message",
            )
        except ValueError as error:  # the SDK's own check of the number
            return result(Outcome.PERMANENT, error=str(error))

        # JSON whatever the charset its Content-Type names (the SDK's own parsing wants none).
        text = response.content.decode(errors="replace")
        raw = text[:1024]
        if response.status_code == 401:
            return result(
                Outcome.BAD_CREDENTIALS,
                http_status=401,
                error="the gateway refused our credentials: check AT_USERNAME and AT_API_KEY",
                raw_reply=raw,
            )
        # A redirect (http:// for https://, a moved host) or a refusal: configuration to fix.
        if 300 <= response.status_code < 500 and response.status_code not in (408, 429):
            return result(
                Outcome.RETRY_OPERATOR,
                http_status=response.status_code,
                error=f"gateway HTTP {response.status_code}: check AT_API_URL and AT_USERNAME",
                raw_reply=raw,
            )
        if response.status_code >= 500 or response.status_code in (408, 429):
            return result(
                Outcome.RETRY,
                http_status=response.status_code,
                error=f"gateway HTTP {response.status_code}",
                raw_reply=raw,
            )
        try:
            data = json.loads(text)["SMSMessageData"]
            if not data["Recipients"]:
                # The whole request refused, e.g. {"Message": "InvalidSenderId", "Recipients": []}
                message = str(data.get("Message", ""))[:64]
                return result(
                    Outcome.RETRY_OPERATOR if message in OPERATOR_MESSAGES else Outcome.RETRY,
                    http_status=response.status_code,
                    status=message,
                    error=f"gateway refused the message: {message}",
                    raw_reply=raw,
                )
            recipient = data["Recipients"][0]
            code = int(recipient["statusCode"])
        except (ValueError, KeyError, IndexError, TypeError):
            # An answer we cannot read: the message may or may not have gone. Retrying risks
            # a duplicate, giving up risks a lost SMS; we retry (at least once).
            return result(
                Outcome.RETRY,
                http_status=response.status_code,
                error=f"unreadable gateway reply (HTTP {response.status_code})",
                raw_reply=raw,
            )

        status = str(recipient.get("status", ""))[:64]
        fields = {
            "http_status": response.status_code,
            "status_code": code,
            "status": status,
            "raw_reply": raw,
        }
        if code in ACCEPTED_CODES:
            return result(
                Outcome.ACCEPTED,
                message_id=_message_id(recipient.get("messageId")),
                cost=str(recipient.get("cost", ""))[:32] or None,
                **fields,
            )
        error = f"gateway status {code} {status}".strip()
        if code in OPERATOR_CODES:
            return result(Outcome.RETRY_OPERATOR, error=error, **fields)
        if code in PERMANENT_CODES:
            return result(Outcome.PERMANENT, error=error, **fields)
        return result(Outcome.RETRY, error=error, **fields)


def _message_id(value: object) -> str | None:
    # The gateway says "None" for a recipient it did not accept; an id must fit the column.
    if not isinstance(value, str) or value.strip() in ("", "None"):
        return None
    return value.strip()[:100]


def build_sender(settings: Settings) -> SmsSender:
    """Africa's Talking when an API key is set; the console sender otherwise (development)."""
    if settings.at_api_key:
        return AfricasTalkingSender(
            username=settings.at_username,
            api_key=settings.at_api_key,
            sender_id=settings.at_sender_id,
            base_url=settings.at_api_url,
            timeout=settings.sms_timeout,
        )
    if settings.is_production:  # pragma: no cover - Settings refuses this combination
        raise RuntimeError("AT_API_KEY is required in production")
    log.warning("AT_API_KEY is not set: SMS are logged by the console sender, not sent")
    return ConsoleSender()
