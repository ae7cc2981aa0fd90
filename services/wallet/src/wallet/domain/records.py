"""What the ledger records: outcomes (the event store) and the read models derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import JsonValue

from shared.messaging import WalletCommand
from wallet.domain.ledger import AccountKey, Balances, Entry, Holds, WalletKey

IdempotencyKey = tuple[str, str, str]  # (type, transaction_type, reference_id)
OutcomeStatus = Literal["applied", "rejected"]


@dataclass(frozen=True, slots=True)
class BalanceAfter:
    """A wallet's balances after an outcome. For an applied one, `version` is the wallet's version
    it committed: the wallet's own sequence of transactions, which replay and verify fold in (a
    clock may step back, versions do not). None on rejections and on outcomes stored before."""

    user_id: str
    currency: str
    balances: Balances
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final answer to one idempotency key: an applied ledger transaction or a rejection.

    Stored once, under a unique key, atomically with the projections it causes. Rejections are
    recorded too, so that a redelivery gets the same answer instead of being decided again later.
    """

    key: IdempotencyKey
    fingerprint: str
    command: WalletCommand
    status: OutcomeStatus
    transaction_id: str
    recorded_at: datetime
    entries: tuple[Entry, ...] = ()
    balances_after: tuple[BalanceAfter, ...] = ()
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class LegacyWallet:
    """A `wallets` document in the seed's old shape: not written by the ledger, no events behind
    it. Verify lists it and `wallet migrate` brings its balances in (replacing it); its fields are
    kept as the text they were stored as. One that holds no money (every amount 0, null or
    missing) has nothing to migrate: verify does not list it and replay may drop it."""

    user_id: str
    currency: str
    fields: dict[str, str]
    holds_money: bool = True  # an amount that cannot be read counts as money


@dataclass(frozen=True, slots=True)
class LegacyDocument:
    """A legacy `wallets` document, still in `wallets` or, once the ledger replaced it with its
    wallet (a command reached it, or an opening credit of `wallet migrate` applied), as kept in
    `wallets_legacy_snapshot`: what it said, and the document itself (amounts as exact decimals)
    for `wallet verify` and `wallet replay` to tell whether migrate has brought its balances in."""

    wallet: LegacyWallet
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WalletRecord:
    """The `wallets` read model of one (user, currency), with the version that guards its updates.

    version counts the applied transactions that touched this wallet; 0 means not stored yet.
    holds splits the locked balance by the reference that locked it; they always sum to it.
    """

    user_id: str
    currency: str
    balances: Balances
    version: int
    created_at: datetime
    last_updated: datetime
    holds: Holds = ()
    # The total as a read model stores it (MongoDB keeps the seed's total_balance field), so that
    # verify can catch it drifting from available + locked; None where nothing is stored.
    stored_total: Decimal | None = field(default=None, compare=False)

    @property
    def key(self) -> WalletKey:
        return (self.user_id, self.currency)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One `wallet_transactions` row: the seed's shape, one row per user and currency touched."""

    transaction_id: str
    ledger_transaction_id: str
    user_id: str
    currency: str
    amount: Decimal
    transaction_type: str
    direction: str  # credit | debit | lock | unlock | release | savings_in | savings_out
    reference_id: str
    balance_after: Decimal  # available balance after, as in the seed
    locked_balance_after: Decimal
    savings_balance_after: Decimal
    metadata: dict[str, JsonValue]
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class LedgerBatch:
    """Everything one batch writes, committed atomically by the store.

    wallets carry the version they were read at (0 = new); the store refuses the whole batch if
    any stored version moved since, and the batch is then decided again.
    """

    outcomes: tuple[Outcome, ...]
    wallets: tuple[tuple[WalletRecord, int], ...]  # (new record, version it was read at)
    history: tuple[HistoryRow, ...]
    account_deltas: dict[AccountKey, Decimal] = field(default_factory=dict)
    # The least each floored platform account must hold at commit (else ConcurrencyConflict): what
    # the batch's decisions relied on, so two writers can never both spend the same liquidity.
    account_floors: dict[AccountKey, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredBalances:
    """What a batch reads before deciding: the stored wallets and floored platform accounts."""

    wallets: dict[WalletKey, WalletRecord] = field(default_factory=dict)
    accounts: dict[AccountKey, Decimal] = field(default_factory=dict)
