"""Ledger accounts. A user has three buckets per currency; platform and external accounts have one.

User buckets never go negative, and neither do the floored platform accounts (FLOORS):
platform:liquidity is real inventory and platform:fees pays out commissions. Other platform and
external accounts may: `external:nowpayments` goes negative by everything deposited, which is
exactly what conservation needs.
"""

from __future__ import annotations

from typing import Final, Literal

Bucket = Literal["available", "locked", "savings"]
BUCKETS: Final[tuple[Bucket, ...]] = ("available", "locked", "savings")

PLATFORM_FEES: Final = "platform:fees"
PLATFORM_LIQUIDITY: Final = "platform:liquidity"
PLATFORM_INTEREST: Final = "platform:interest"
USER_PREFIX: Final = "user:"

# Platform accounts that may never go below zero in any currency, and the reason a command that
# would take one below zero is rejected with.
FLOORS: Final[dict[str, str]] = {
    PLATFORM_LIQUIDITY: "insufficient_liquidity",
    PLATFORM_FEES: "insufficient_platform_funds",
}


def user_account(user_id: str, bucket: Bucket) -> str:
    return f"{USER_PREFIX}{user_id}:{bucket}"


def external_account(counterparty: str) -> str:
    return f"external:{counterparty}"


def parse_user_account(account: str) -> tuple[str, Bucket] | None:
    """(user_id, bucket) of a user account; None for platform and external accounts."""
    if not account.startswith(USER_PREFIX):
        return None
    # The bucket is the last segment, so a user id may itself contain ':'.
    user_id, _, bucket = account.removeprefix(USER_PREFIX).rpartition(":")
    if bucket not in BUCKETS or not user_id:
        raise ValueError(f"not a user account: {account!r}")
    return user_id, bucket
