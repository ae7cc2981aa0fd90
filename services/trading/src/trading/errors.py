"""Refusals of the trading domain: a stable `code`, a message, and a kind that the HTTP layer maps
to a status (features raise these; `bootstrap` installs the one handler that answers them)."""

from __future__ import annotations

from typing import ClassVar


class TradingError(Exception):
    """A request that cannot be done as asked; nothing moved."""

    http_status: ClassVar[int] = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Invalid(TradingError):
    """The input itself is wrong (unknown currency, amount too small, …)."""

    http_status = 422


class NotFound(TradingError):
    """No such object, or it belongs to someone else (never tell which)."""

    http_status = 404


class Conflict(TradingError):
    """The object's state forbids it (quote_used, quote_expired, idempotency_conflict)."""

    http_status = 409


class Unavailable(TradingError):
    """Temporarily impossible (no fresh price); the same request may succeed later."""

    http_status = 503
