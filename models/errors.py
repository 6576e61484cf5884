"""Expected failures of domain operations, with machine-readable codes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Why a domain operation refused a change (a mutation's fieldErrors). A caller without a
    token never reaches one: that is the request's UNAUTHENTICATED error, not a field's."""

    NOT_FOUND = "NOT_FOUND"
    INVALID = "INVALID"
    INVALID_STATE = "INVALID_STATE"
    DUPLICATE = "DUPLICATE"
    FORBIDDEN = "FORBIDDEN"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"


@dataclass(frozen=True)
class FieldError:
    field: str | None
    code: ErrorCode
    message: str


class DomainError(Exception):
    """Raised by a domain function to reject a change; carries one or more field errors."""

    def __init__(self, *errors: FieldError) -> None:
        super().__init__("; ".join(error.message for error in errors))
        self.errors = errors

    @classmethod
    def single(cls, field: str | None, code: ErrorCode, message: str) -> DomainError:
        return cls(FieldError(field, code, message))


class ErrorCollector:
    """Gathers validation errors so one answer can name every bad field at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str | None, code: ErrorCode, message: str) -> None:
        self.errors.append(FieldError(field, code, message))

    def raise_if_any(self) -> None:
        if self.errors:
            raise DomainError(*self.errors)
