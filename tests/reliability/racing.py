"""Stores that make concurrent writers collide on purpose, to prove the retry path."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.ports import ConcurrencyConflict
from wallet.domain.ledger import AccountKey, WalletKey
from wallet.domain.records import IdempotencyKey, LedgerBatch, Outcome, StoredBalances


class RecordingStore(InMemoryLedgerStore):
    """The reference store, recording each commit (the order of decisions) and each conflict."""

    def __init__(self) -> None:
        super().__init__()
        self.committed: list[LedgerBatch] = []
        self.conflicts: Counter[str] = Counter()
        # committed index -> index of the first batch committed between its reads and its commit
        self.read_before: dict[int, int] = {}

    async def commit(self, batch: LedgerBatch) -> None:
        try:
            await super().commit(batch)
        except ConcurrencyConflict as error:
            self.conflicts["duplicate_key" if "idempotency" in str(error) else "version"] += 1
            raise
        self.committed.append(batch)

    def decisions(self) -> list[Outcome]:
        """Every decision in a serial order equivalent to what happened.

        An applied command takes effect at its commit (its wallets' versions are checked there).
        A rejection changes nothing, so it takes effect when its balances were read: a batch that
        read before a rival batch committed has its rejections on wallets it does not write placed
        before the rival's decisions. They commute with the rest of their own batch, which writes
        none of those wallets; everything else goes at the commit.
        """
        order: list[Outcome] = []
        starts: list[int] = []
        for index, batch in enumerate(self.committed):
            starts.append(len(order))
            early: list[Outcome] = []
            if index in self.read_before:
                written = {record.key for record, _ in batch.wallets}
                early = [
                    o
                    for o in batch.outcomes
                    if o.status == "rejected"
                    and (o.command.user_id, o.command.currency) not in written
                ]
                at = starts[self.read_before[index]]
                order[at:at] = early
            order.extend(o for o in batch.outcomes if o not in early)
        return order


class YieldingStore(RecordingStore):
    """Gives the event loop away around every call, as a network round trip does, so that
    concurrent batches interleave between their reads and their commit."""

    async def find_outcomes(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, Outcome]:
        await asyncio.sleep(0)
        found = await super().find_outcomes(keys)
        await asyncio.sleep(0)
        return found

    async def read_balances(
        self, wallets: Sequence[WalletKey], accounts: Sequence[AccountKey]
    ) -> StoredBalances:
        await asyncio.sleep(0)
        found = await super().read_balances(wallets, accounts)
        await asyncio.sleep(0)
        return found

    async def commit(self, batch: LedgerBatch) -> None:
        await asyncio.sleep(0)
        await super().commit(batch)


class InterleavingStore:
    """One writer's view of the shared store: before some of its commits, the other writer runs a
    whole batch (reads, decides, commits), so this commit finds versions moved or keys taken."""

    def __init__(self, shared: RecordingStore, rng: random.Random, rate: float) -> None:
        self._shared = shared
        self._rng = rng
        self._rate = rate
        self.rival: list[Callable[[], Awaitable[object]]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._shared, name)

    async def find_outcomes(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, Outcome]:
        return await self._shared.find_outcomes(keys)

    async def read_balances(
        self, wallets: Sequence[WalletKey], accounts: Sequence[AccountKey]
    ) -> StoredBalances:
        return await self._shared.read_balances(wallets, accounts)

    async def commit(self, batch: LedgerBatch) -> None:
        before = len(self._shared.committed)
        if self.rival and self._rng.random() < self._rate:
            await self.rival.pop(0)()
        await self._shared.commit(batch)
        if len(self._shared.committed) > before + 1:  # the rival committed in between
            self._shared.read_before[len(self._shared.committed) - 1] = before
