"""The error a missing or malformed setting stops a process with, and how it is shown."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class ConfigError(RuntimeError):
    """A missing or malformed setting; the message names the variable."""


def _report_config_error(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    # A process that stops on a setting (flask, celery) prints the message alone: it names the
    # variable, and a page of traceback above it would only hide it. gunicorn prints its own
    # one-line "Error:" for a RuntimeError such as this.
    if isinstance(error, ConfigError):
        print(f"configuration error: {error}", file=sys.stderr)
    else:
        _previous_excepthook(kind, error, trace)


_previous_excepthook = sys.excepthook
sys.excepthook = _report_config_error


@contextmanager
def stop_on_config_error() -> Iterator[None]:
    """Stop the process with the message alone on a `ConfigError`, where a caller (Celery's
    command line) would print the traceback of any error it meets."""
    try:
        yield
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
