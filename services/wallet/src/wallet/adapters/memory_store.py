"""An in-memory ledger store with the same contract as the MongoDB one: for fast tests and benches.

Commit is all-or-nothing and checks the same things MongoDB's unique index and version guards do,
so the same store test suite passes against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal

from shared.money import LEDGER_CONTEXT
from wallet.application.ports import ConcurrencyConflict
from wallet.domain.ledger import ZERO, AccountKey, WalletKey
from wallet.domain.records import (
    HistoryRow,
    IdempotencyKey,
    LedgerBatch,
    LegacyDocument,
    Outcome,
    StoredBalances,
    WalletRecord,
)


class InMemoryLedgerStore:
    def __init__(self) -> None:
        self.outcomes: dict[IdempotencyKey, Outcome] = {}
        self.wallets: dict[WalletKey, WalletRecord] = {}
        self.history: dict[str, HistoryRow] = {}
        self.accounts: dict[tuple[str, str], Decimal] = {}
        self.round_trips = 0  # what a database would have been asked: benches and tests read it

    async def find_outcomes(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, Outcome]:
        self.round_trips += 1
        return {key: self.outcomes[key] for key in keys if key in self.outcomes}

    async def read_balances(
        self, wallets: Sequence[WalletKey], accounts: Sequence[AccountKey]
    ) -> StoredBalances:
        if not (wallets or accounts):
            return StoredBalances()
        self.round_trips += 1
        return StoredBalances(
            {key: self.wallets[key] for key in wallets if key in self.wallets},
            {key: self.accounts.get(key, ZERO) for key in accounts},
        )

    async def commit(self, batch: LedgerBatch) -> None:
        self.round_trips += 1
        # Check everything first, write after: all or nothing, like the MongoDB transaction.
        for outcome in batch.outcomes:
            if outcome.key in self.outcomes:
                raise ConcurrencyConflict(f"idempotency key {outcome.key} already recorded")
        for record, read_version in batch.wallets:
            stored = self.wallets.get(record.key)
            if (stored.version if stored else 0) != read_version:
                raise ConcurrencyConflict(f"wallet {record.key} changed since it was read")
        for row in batch.history:
            if row.transaction_id in self.history:
                raise ConcurrencyConflict(f"history row {row.transaction_id} already exists")
        for key, floor in batch.account_floors.items():
            if self.accounts.get(key, ZERO) < floor:
                raise ConcurrencyConflict(f"{key[0]} {key[1]} holds less than the batch spends")
        for outcome in batch.outcomes:
            self.outcomes[outcome.key] = outcome
        for record, _ in batch.wallets:
            self.wallets[record.key] = record
        for row in batch.history:
            self.history[row.transaction_id] = row
        for key, delta in batch.account_deltas.items():
            self.accounts[key] = LEDGER_CONTEXT.add(self.accounts.get(key, ZERO), delta)

    async def wallets_of(self, user_id: str) -> list[WalletRecord]:
        return sorted(
            (w for w in self.wallets.values() if w.user_id == user_id), key=lambda w: w.currency
        )

    async def history_of(
        self,
        user_id: str,
        *,
        currency: str | None,
        limit: int,
        before: tuple[datetime, str] | None,
        reference_id: str | None = None,
    ) -> list[HistoryRow]:
        rows = [
            row
            for row in self.history.values()
            if row.user_id == user_id
            and (currency is None or row.currency == currency)
            and (reference_id is None or row.reference_id == reference_id)
            and (before is None or (row.timestamp, row.transaction_id) < before)
        ]
        rows.sort(key=lambda row: (row.timestamp, row.transaction_id), reverse=True)
        return rows[:limit]

    async def account_balances(self) -> dict[tuple[str, str], Decimal]:
        return dict(self.accounts)

    @asynccontextmanager
    async def reading_at_one_instant(self) -> AsyncIterator[InMemoryLedgerStore]:
        # The records are immutable: copies of the maps are the store as it is now.
        view = InMemoryLedgerStore()
        view.outcomes, view.wallets = dict(self.outcomes), dict(self.wallets)
        view.history, view.accounts = dict(self.history), dict(self.accounts)
        yield view

    async def all_outcomes(self) -> AsyncIterator[Outcome]:
        for outcome in list(self.outcomes.values()):
            yield outcome

    async def all_wallets(self) -> AsyncIterator[WalletRecord]:
        for record in list(self.wallets.values()):
            yield record

    async def legacy_wallets(self) -> list[LegacyDocument]:
        return []  # only a database that held the seed's wallets has them

    async def replaced_legacy_wallets(self) -> list[LegacyDocument]:
        return []  # nor copies of them

    async def all_history(self) -> AsyncIterator[HistoryRow]:
        for row in list(self.history.values()):
            yield row

    async def replace_projections(
        self,
        wallets: Sequence[WalletRecord],
        history: Sequence[HistoryRow],
        accounts: dict[tuple[str, str], Decimal],
    ) -> None:
        self.wallets = {w.key: w for w in wallets}
        self.history = {row.transaction_id: row for row in history}
        self.accounts = dict(accounts)
