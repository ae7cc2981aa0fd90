"""Refusals of the referral rules, each with a stable code; the service's one error handler
answers them with the contract's error body and the status of their kind."""

from __future__ import annotations

from trading.errors import TradingError


class ReferralRefused(TradingError):
    """A bad referral request (self_referral, a referrer id that is no user id): 400."""

    http_status = 400


class AlreadyBound(ReferralRefused):
    """The invitee is bound already (409 already_bound): a binding is once and for good."""

    http_status = 409
