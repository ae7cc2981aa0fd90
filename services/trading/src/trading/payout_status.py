"""The statuses of a payout record (savings interest, a referral commission): `pending` until the
wallet's result makes it `paid` or `failed`.

A payout failed with `processing_failed` is not settled for good: the wallet failed on its
command without recording an outcome, so the same command sent again may still apply. It may be
sent again, and a later answer settles it."""

from __future__ import annotations

from typing import Final

from shared.messaging.outcomes import UNRECORDED_REFUSAL

PENDING: Final = "pending"
PAID: Final = "paid"
FAILED: Final = "failed"


def unsettled(status: str, reason: str | None) -> bool:
    """Whether a payout record still waits for the wallet's outcome: pending, or failed only
    because the wallet failed on its command without recording one."""
    return status == PENDING or (status == FAILED and reason == UNRECORDED_REFUSAL)
