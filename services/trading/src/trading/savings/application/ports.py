"""What savings needs from storage: transfers, the savings history and interest (accrual)
records. Two adapters keep them, MongoDB (`adapters.mongo`) and memory (`adapters.memory`); one
contract suite runs on both.

Instants are kept as MongoDB keeps them: in UTC, to the millisecond (rounded down), and queries
compare them at that precision. Amounts are kept exact, as IEEE 754 decimal128 holds them (a value
of more than 34 significant digits is refused with `decimal.Inexact`, nothing stored). Records are
handed out as copies: changing one changes nothing stored.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from shared.messaging import LedgerTransaction
from shared.paging import Position
from trading.savings.domain.accrual import AccrualDue, SavingsMovement
from trading.savings.domain.transfers import TransferStatus

# A transfer: `transfer_id`, `user_id`, `currency`, `amount`, `direction` (to_savings |
# to_wallet), `status` (pending | completed | failed), `reason`, `transaction_id`, `created_at`,
# `updated_at`.
type TransferRecord = dict[str, Any]

# An interest record: `reference_id`, `user_id`, `currency`, `date` (ISO day), `balance`, `apr`,
# `amount`, `status` (pending | paid | failed), `reason`, `created_at`, `updated_at`.
type AccrualRecord = dict[str, Any]


class Transfers(Protocol):
    """One record per transfer id (the request's Idempotency-Key, or a new id), never deleted."""

    async def insert(self, transfer: TransferRecord) -> bool:
        """Stores a new transfer (its fields as given); False, and nothing changed, when its
        `transfer_id` is stored already. Of racing inserts of one id exactly one stores it."""
        ...

    async def get(self, transfer_id: str) -> TransferRecord | None: ...

    async def settle(
        self,
        transfer_id: str,
        status: TransferStatus,
        *,
        reason: str | None,
        transaction_id: str | None,
        at: datetime,
    ) -> TransferRecord | None:
        """pending → `status` (completed | failed) with `reason`, `transaction_id` and
        `updated_at` = `at`, once: the settled transfer as now stored, else None and nothing
        changes (unknown, or settled already: by a replayed or a racing result)."""
        ...

    async def pending_before(
        self, before: datetime, limit: int = 100, after: Position | None = None
    ) -> list[TransferRecord]:
        """Pending transfers whose command was last sent before `before` (when sent again,
        `asked_at`, else when created: it is sent right after), oldest first (by `created_at`,
        then `transfer_id`), only those after `after` (the `(created_at, transfer_id)` of a
        transfer this returned) when given, at most `limit` (0: no limit)."""
        ...

    async def mark_asked(self, transfer_id: str, at: datetime) -> None:
        """The command of a pending transfer was sent again at `at` (a settled one is untouched;
        `updated_at` stays)."""
        ...


class SavingsHistory(Protocol):
    """Every change of every user's savings bucket, one row per (transaction, user, currency):
    `SavingsMovement.key`. The ledger's event is the authority; a row recorded from the wallet's
    result only fills the gap until the event arrives."""

    async def record_transaction(self, transaction: LedgerTransaction) -> None:
        """`record_event` of each savings movement of the transaction."""
        ...

    async def record_event(self, movement: SavingsMovement) -> None:
        """The row of the movement's key becomes this movement, whatever was recorded before."""
        ...

    async def record_result(self, movement: SavingsMovement) -> None:
        """The movement is recorded only if its key has no row yet (an event or an earlier
        result keeps its own)."""
        ...

    async def balances(self, currency: str, cutoff: datetime) -> dict[str, Decimal]:
        """Each user's savings balance of `currency` at `cutoff`: the exact sum of their rows
        that occurred strictly before it (users whose rows sum to zero included)."""
        ...

    async def positions(self, user_id: str) -> list[tuple[str, Decimal, Decimal]]:
        """(currency, balance, interest earned) of every currency the user has a row of, sorted
        by currency: all their rows' exact sum, and that of the rows of interest payments."""
        ...


class Accruals(Protocol):
    """One interest record per payment reference (currency, day, user), `pending` until the
    wallet's result settles it: the amount sent under a reference is decided once. And the runs
    of each (currency, day) that completed: once one has claimed every payment it owed, the
    day's records are final (a later run only sends those still unsettled again:
    `trading.payout_status.unsettled`)."""

    async def claim(self, due: AccrualDue, at: datetime) -> AccrualRecord:
        """The record of `due`'s reference: new (pending, created at `at`; answered as given, not
        read back) or, if the reference has one already, that one as stored the first time
        (whatever `due` says now). Of racing claims of one reference exactly one creates it."""
        ...

    async def get(self, reference_id: str) -> AccrualRecord | None: ...

    async def settle(
        self, reference_id: str, status: str, reason: str | None, at: datetime
    ) -> None:
        """pending, or failed with `processing_failed` (the wallet recorded no outcome: the
        payment may still apply) → `status` (paid | failed); a record settled otherwise is not
        changed again."""
        ...

    async def of_day(self, currency: str, day: date) -> list[AccrualRecord]:
        """Every interest record of `currency` for `day`, whatever its status, by reference."""
        ...

    async def complete_run(self, currency: str, day: date, at: datetime) -> None:
        """Notes that a run of (`currency`, `day`) claimed every payment it owed, at `at`; noting
        it again changes nothing (the first `at` is kept)."""
        ...

    async def run_completed(self, currency: str, day: date) -> bool:
        """Whether a run of (`currency`, `day`) was noted completed."""
        ...

    async def newest_completed(self, currency: str) -> date | None:
        """The latest day of `currency` whose run was noted completed; None if none was."""
        ...
