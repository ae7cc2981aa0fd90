"""Refusals of the savings rules, each with a stable code; the service's one error handler
answers them with the contract's error body and the status of their kind."""

from __future__ import annotations

from trading.errors import TradingError


class SavingsRefused(TradingError):
    """A bad savings request (unknown currency, bad amount or date, no product): 400."""

    http_status = 400


class SavingsNotFound(SavingsRefused):
    """No such transfer, or another user's: 404."""

    http_status = 404


class SavingsUnavailable(SavingsRefused):
    """Not possible right now (the savings history is still reading the ledger): 503."""

    http_status = 503


class SavingsConflict(SavingsRefused):
    """The request's Idempotency-Key already named a transfer of other figures: 409."""

    http_status = 409
