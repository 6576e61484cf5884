"""Sentry reports go out only when SENTRY_DSN is set, masked like our logs. (What they must
never carry, and which errors they must never report, is in tests/attacks/test_sentry_pii.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import sentry_sdk

from common import sentry
from tests.sentry_receiver import SentryReceiver


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    running = SentryReceiver()
    yield running
    running.close()


def test_without_a_dsn_nothing_is_set_up(settings):
    assert sentry.init(replace(settings, sentry_dsn=None)) is False


def test_a_captured_error_reaches_sentry_with_phone_numbers_masked(settings, receiver):
    assert sentry.init(replace(settings, sentry_dsn=receiver.dsn)) is True

    sentry.capture(RuntimeError("could not text +254712345678"))
    sentry_sdk.flush(timeout=5)

    [event] = receiver.events()
    assert event["exception"]["values"][-1]["value"] == "could not text +254****678"
    assert "+254712345678" not in receiver.text()
