"""Refusals of the referral rules, each with a stable machine-readable code (mapped to HTTP 4xx)."""

from __future__ import annotations


class ReferralRefused(Exception):
    """A referral request that is not allowed; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
