"""Refusals of the P2P domain, each with a stable machine-readable code.

The entrypoints map kinds to HTTP statuses; the domain knows nothing of HTTP.
"""

from __future__ import annotations


class P2pError(Exception):
    """A request the service refuses; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Refused(P2pError):
    """Bad input: an amount, a currency, a range or a window the rules do not accept (400)."""


class NotFound(P2pError):
    """The offer or trade does not exist, or the caller is not allowed to know it does (404)."""


class Forbidden(P2pError):
    """The caller is not the one this action belongs to (403)."""


class Conflict(P2pError):
    """The object's state does not allow this action now (409)."""


class Unsendable(Conflict):
    """The wallet command this action needs cannot be built from what the trade holds (a value an
    earlier version stored that the command now refuses) (409): nothing moves; support has to
    look at the trade. `reason` names the refused field."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "trade_unsendable",
            "this trade's wallet command cannot be built from what it holds; contact support",
        )
        self.reason = reason
