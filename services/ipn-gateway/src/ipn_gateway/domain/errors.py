"""Refusals of the gateway's domain, each with a stable machine-readable code.

The entrypoints map codes to HTTP statuses; the domain knows nothing of HTTP.
"""

from __future__ import annotations


class GatewayError(Exception):
    """A request the gateway refuses; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class IpnRejected(GatewayError):
    """An IPN that is not processed: bad signature, not JSON, missing fields."""


class WithdrawalRefused(GatewayError):
    """A withdrawal request or decision that is not allowed."""


class NotFound(GatewayError):
    """The addressed withdrawal or order does not exist (or is not the caller's)."""


class Forbidden(GatewayError):
    """The caller may not do this (not an admin, approving their own withdrawal)."""


class Conflict(GatewayError):
    """The object is not in a state that allows this (approve a withdrawal that is not locked)."""


class UpstreamUnavailable(GatewayError):
    """NOWPayments did not answer, or answered with a server error."""


class UpstreamRefused(GatewayError):
    """NOWPayments refused the request (its 4xx)."""
