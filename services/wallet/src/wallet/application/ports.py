"""What the application needs from the outside: a ledger store (the publisher's port lives with
the intake that uses it, `command_intake.IntakePublisher`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from wallet.domain.ledger import AccountKey, WalletKey
from wallet.domain.records import (
    HistoryRow,
    IdempotencyKey,
    LedgerBatch,
    LegacyDocument,
    Outcome,
    StoredBalances,
    WalletRecord,
)


class ConcurrencyConflict(Exception):
    """Another writer got there first (a wallet version moved, or an idempotency key was taken).

    Nothing of the batch was written; deciding it again against fresh state is always safe.
    """


class TransientStoreError(Exception):
    """The store could not answer now (failover, timeout); the batch can be retried as is."""


class StoreTimeout(TransientStoreError):
    """The store ran out of time on this request: the same request may time out again, a smaller
    one may fit (the service splits the batch)."""


class LedgerStore(Protocol):
    """The event store and its projections, behind one port (MongoDB, or in memory for tests)."""

    # Write side: a batch costs one read of keys, one read of wallets and one atomic commit.
    async def find_outcomes(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, Outcome]:
        """The recorded outcomes of those keys that have one."""
        ...

    async def read_balances(
        self, wallets: Sequence[WalletKey], accounts: Sequence[AccountKey]
    ) -> StoredBalances:
        """The stored wallets among those keys and the balances of those platform accounts (zero
        where none is stored), in one round trip."""
        ...

    async def commit(self, batch: LedgerBatch) -> None:
        """Write the whole batch atomically, or nothing (raising ConcurrencyConflict): also when a
        floored account holds less than `batch.account_floors` asks at the moment of commit."""
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
    def reading_at_one_instant(self) -> AbstractAsyncContextManager[LedgerStore]:
        """A view for reading only, whose reads all see the store as it was at one instant: a
        batch the wallet commits while they run is in every one of them or in none (verify
        runs beside the wallet, and reads the events after the projections)."""
        ...

    def all_outcomes(self) -> AsyncIterator[Outcome]: ...

    def all_wallets(self) -> AsyncIterator[WalletRecord]: ...

    def all_history(self) -> AsyncIterator[HistoryRow]: ...

    async def legacy_wallets(self) -> list[LegacyDocument]:
        """`wallets` documents in the seed's old shape (no ledger fields): skipped by every read
        above, listed by verify while they hold money migrate has not brought in, replaced by the
        first ledger write of their wallet (one whose user id or currency the ledger writes
        otherwise, `btc` or a number, stays after migrate brought it in as `BTC` or `"42"`)."""
        ...

    async def replaced_legacy_wallets(self) -> list[LegacyDocument]:
        """The copies in `wallets_legacy_snapshot` of legacy documents no longer in `wallets` (the
        ledger wrote its wallet over them): a copy of one still there is that document, which
        `legacy_wallets` lists."""
        ...

    async def replace_projections(
        self,
        wallets: Sequence[WalletRecord],
        history: Sequence[HistoryRow],
        accounts: dict[tuple[str, str], Decimal],
    ) -> None:
        """Swap in freshly built read models (replay)."""
        ...
