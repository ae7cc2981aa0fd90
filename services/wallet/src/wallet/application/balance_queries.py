"""Read-side questions the projections answer without a new index: balances as of an instant."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from wallet.application.ports import LedgerStore
from wallet.domain.ledger import Balances

# Sorts after every transaction id, so that all rows committed at the cursor's instant are included.
_AFTER_EVERY_ID = "\uffff"


@dataclass(frozen=True, slots=True)
class BalancesAsOf:
    currency: str
    balances: Balances
    last_updated: datetime  # when the wallet last changed at or before the instant asked for


def to_stored_precision(instant: datetime) -> datetime:
    """Milliseconds, as the commit clock and MongoDB keep them: both stores compare alike."""
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


async def balances_at(store: LedgerStore, user_id: str, at: datetime) -> list[BalancesAsOf]:
    """Each wallet's balances as of `at` on the wallet's commit clock.

    A history row records every bucket after each change (`*_balance_after`), so the newest row at
    or before `at` per currency is that wallet's state then: one indexed query per currency the
    user has ever held (the wallets list is that set, as wallets are never deleted).
    """
    cutoff = (to_stored_precision(at), _AFTER_EVERY_ID)
    wallets = await store.wallets_of(user_id)
    latest = await asyncio.gather(
        *(store.history_of(user_id, currency=w.currency, limit=1, before=cutoff) for w in wallets)
    )
    return [
        BalancesAsOf(
            currency=row.currency,
            balances=Balances(
                row.balance_after, row.locked_balance_after, row.savings_balance_after
            ),
            last_updated=row.timestamp,
        )
        for rows in latest
        for row in rows[:1]
    ]
