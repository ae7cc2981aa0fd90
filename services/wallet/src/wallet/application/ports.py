"""What the application needs from the outside: a ledger store and a publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from shared.messaging import CommandResult, LedgerTransaction
from wallet.domain.ledger import WalletKey
from wallet.domain.records import HistoryRow, IdempotencyKey, LedgerBatch, Outcome, WalletRecord


class ConcurrencyConflict(Exception):
    """Another writer got there first (a wallet version moved, or an idempotency key was taken).

    Nothing of the batch was written; deciding it again against fresh state is always safe.
    """


class TransientStoreError(Exception):
    """The store could not answer now (failover, timeout); the batch can be retried as is."""


class HistoryCursor(Protocol):
    timestamp: datetime
    transaction_id: str


class LedgerStore(Protocol):
    """The event store and its projections, behind one port (MongoDB, or in memory for tests)."""

    # Write side: a batch costs one read of keys, one read of wallets and one atomic commit.
    async def find_outcomes(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, Outcome]:
        """The recorded outcomes of those keys that have one."""
        ...

    async def find_wallets(self, keys: Sequence[WalletKey]) -> dict[WalletKey, WalletRecord]:
        """The stored wallets among those keys."""
        ...

    async def commit(self, batch: LedgerBatch) -> None:
        """Write the whole batch atomically, or nothing (raising ConcurrencyConflict)."""
        ...

    # Read side.
    async def wallets_of(self, user_id: str) -> list[WalletRecord]: ...

    async def history_of(
        self,
        user_id: str,
        *,
        currency: str | None,
        limit: int,
        before: tuple[datetime, str] | None,
        reference_id: str | None = None,
    ) -> list[HistoryRow]:
        """Newest first; `before` is the (timestamp, transaction_id) of the last row already seen;
        `reference_id` keeps only that reference's rows."""
        ...

    async def account_balances(self) -> dict[tuple[str, str], Decimal]:
        """Balances of platform and external accounts by (account, currency)."""
        ...

    # Ops: replay and verify read everything and swap projections in.
    def all_outcomes(self) -> AsyncIterator[Outcome]: ...

    def all_wallets(self) -> AsyncIterator[WalletRecord]: ...

    def all_history(self) -> AsyncIterator[HistoryRow]: ...

    async def replace_projections(
        self,
        wallets: Sequence[WalletRecord],
        history: Sequence[HistoryRow],
        accounts: dict[tuple[str, str], Decimal],
    ) -> None:
        """Swap in freshly built read models (replay)."""
        ...


class OutcomePublisher(Protocol):
    async def publish(
        self, results: Sequence[tuple[str, CommandResult]], events: Sequence[LedgerTransaction]
    ) -> None:
        """Publish results (with their Kafka keys) and events, and wait until the broker has them."""
        ...
