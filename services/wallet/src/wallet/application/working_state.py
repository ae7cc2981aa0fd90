"""Balances as a batch goes: what was stored, plus what earlier commands of the batch did."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from shared.money import LEDGER_CONTEXT, negate
from wallet.domain.accounts import FLOORS
from wallet.domain.ledger import (
    ZERO,
    AccountKey,
    Balances,
    HoldChange,
    WalletKey,
    with_hold,
)
from wallet.domain.records import StoredBalances, WalletRecord


class WorkingState:
    """The LedgerView a batch decides against, and what it changed.

    Floored platform accounts (FLOORS) are tracked from the balances read: `floors` is the least
    each must still hold when the batch commits for none of its steps to go below zero, so the
    store can refuse a batch that another writer's spending made wrong.
    """

    def __init__(self, stored: StoredBalances, now: datetime) -> None:
        self._stored = stored
        self._now = now
        self.current: dict[WalletKey, WalletRecord] = {}
        self.account_deltas: dict[AccountKey, Decimal] = {}
        self.floors: dict[AccountKey, Decimal] = {}

    def record(self, key: WalletKey) -> WalletRecord:
        found = self.current.get(key) or self._stored.wallets.get(key)
        if found is None:
            return WalletRecord(key[0], key[1], Balances(), 0, self._now, self._now)
        return found

    # LedgerView ------------------------------------------------------------------------------

    def balance_of(self, key: WalletKey) -> Balances:
        return self.record(key).balances

    def hold_of(self, key: WalletKey, hold: str) -> Decimal:
        return dict(self.record(key).holds).get(hold, ZERO)

    def account_of(self, key: AccountKey) -> Decimal:
        stored = self._stored.accounts.get(key, ZERO)
        return LEDGER_CONTEXT.add(stored, self.account_deltas.get(key, ZERO))

    # Changes ---------------------------------------------------------------------------------

    def update(self, key: WalletKey, balances: Balances, holds: tuple[HoldChange, ...]) -> int:
        """Store the wallet's new balances (and its share of the hold changes); its new version."""
        record = self.record(key)
        kept = record.holds
        for wallet, hold, delta in holds:
            if wallet == key:
                kept = with_hold(kept, hold, delta)
        self.current[key] = WalletRecord(
            record.user_id,
            record.currency,
            balances,
            record.version + 1,
            record.created_at,
            self._now,
            kept,
        )
        return record.version + 1

    def move_account(self, key: AccountKey, delta: Decimal) -> None:
        total = LEDGER_CONTEXT.add(self.account_deltas.get(key, ZERO), delta)
        self.account_deltas[key] = total
        if key[0] in FLOORS and total < 0:
            self.floors[key] = max(self.floors.get(key, ZERO), negate(total))

    def changed(self) -> tuple[tuple[WalletRecord, int], ...]:
        stored = self._stored.wallets
        return tuple(
            (record, stored[key].version if key in stored else 0)
            for key, record in self.current.items()
        )
