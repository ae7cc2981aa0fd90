"""In-memory storage of savings with the MongoDB store's guarantees (tests, one process).

Each method reads and writes without an await in between, so in one event loop it is atomic: a
transfer is inserted once per id and settled once, a history row is written by its event over
whatever a result wrote and by a result only where nothing is, an interest record is claimed once
per reference and settled once, a completed run is noted once per (currency, day). What it keeps
is what MongoDB would keep: instants in UTC to the millisecond (rounded down, and compared at that
precision), amounts as decimal128 holds them (more than 34 significant digits raise
`decimal.Inexact`, as encoding them does). Records are handed out as copies.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from shared.messaging import LedgerTransaction
from shared.money import add
from shared.paging import Position
from trading.memory_values import stored_decimal, stored_instant
from trading.payout_status import PENDING, unsettled
from trading.savings.application.ports import AccrualRecord, TransferRecord
from trading.savings.domain.accrual import (
    INTEREST_TRANSACTION_TYPE,
    AccrualDue,
    SavingsMovement,
    savings_movements,
)
from trading.savings.domain.transfers import TransferStatus

ZERO: Final = Decimal(0)


def _kept(record: dict[str, Any]) -> dict[str, Any]:
    """The record as MongoDB keeps it: every instant in UTC to the millisecond."""
    return {
        name: stored_instant(value) if isinstance(value, datetime) else value
        for name, value in record.items()
    }


def _first[T](found: list[T], limit: int) -> list[T]:
    # A limit of 0 is no limit, a negative one counts as its absolute value (as a cursor's).
    return found[: abs(limit)] if limit else found


class MemoryTransfers:
    def __init__(self) -> None:
        self._transfers: dict[str, dict[str, Any]] = {}

    async def insert(self, transfer: TransferRecord) -> bool:
        stored = _kept(transfer) | {"amount": stored_decimal(transfer["amount"])}
        transfer_id = stored.pop("transfer_id")
        if transfer_id in self._transfers:
            return False
        self._transfers[transfer_id] = stored
        return True

    async def get(self, transfer_id: str) -> TransferRecord | None:
        return self._view(transfer_id) if transfer_id in self._transfers else None

    async def settle(
        self,
        transfer_id: str,
        status: TransferStatus,
        *,
        reason: str | None,
        transaction_id: str | None,
        at: datetime,
    ) -> TransferRecord | None:
        stored = self._transfers.get(transfer_id)
        if stored is None or stored["status"] != TransferStatus.PENDING.value:
            return None
        stored |= {
            "status": status.value,
            "reason": reason,
            "transaction_id": transaction_id,
            "updated_at": stored_instant(at),
        }
        return self._view(transfer_id)

    async def pending_before(
        self, before: datetime, limit: int = 100, after: Position | None = None
    ) -> list[TransferRecord]:
        cutoff = stored_instant(before)
        found = sorted(
            (stored["created_at"], transfer_id)
            for transfer_id, stored in self._transfers.items()
            if stored["status"] == TransferStatus.PENDING.value
            and (stored.get("asked_at") or stored["created_at"]) < cutoff
        )
        if after is not None:
            found = [key for key in found if key > after]
        return [self._view(transfer_id) for _, transfer_id in _first(found, limit)]

    async def mark_asked(self, transfer_id: str, at: datetime) -> None:
        stored = self._transfers.get(transfer_id)
        if stored is not None and stored["status"] == TransferStatus.PENDING.value:
            stored["asked_at"] = stored_instant(at)

    def _view(self, transfer_id: str) -> TransferRecord:
        return {"transfer_id": transfer_id} | self._transfers[transfer_id]


class MemorySavingsHistory:
    def __init__(self) -> None:
        # By key (transaction, user, currency), each in the shape it would have as a document.
        self._rows: dict[str, dict[str, Any]] = {}

    async def record_transaction(self, transaction: LedgerTransaction) -> None:
        for movement in savings_movements(transaction):
            await self.record_event(movement)

    async def record_event(self, movement: SavingsMovement) -> None:
        self._rows[movement.key] = _row(movement) | {"source": "event"}

    async def record_result(self, movement: SavingsMovement) -> None:
        row = _row(movement) | {"source": "result"}
        self._rows.setdefault(movement.key, row)

    async def balances(self, currency: str, cutoff: datetime) -> dict[str, Decimal]:
        at = stored_instant(cutoff)
        balances: dict[str, Decimal] = {}
        for row in self._rows.values():
            if row["currency"] == currency and row["occurred_at"] < at:
                user = row["user_id"]
                balances[user] = add(balances.get(user, ZERO), row["amount"])
        return balances

    async def positions(self, user_id: str) -> list[tuple[str, Decimal, Decimal]]:
        totals: dict[str, tuple[Decimal, Decimal]] = {}
        for row in self._rows.values():
            if row["user_id"] != user_id:
                continue
            balance, interest = totals.get(row["currency"], (ZERO, ZERO))
            balance = add(balance, row["amount"])
            if row["transaction_type"] == INTEREST_TRANSACTION_TYPE:
                interest = add(interest, row["amount"])
            totals[row["currency"]] = (balance, interest)
        return [(currency, *totals[currency]) for currency in sorted(totals)]


def _row(movement: SavingsMovement) -> dict[str, Any]:
    return {
        "transaction_id": movement.transaction_id,
        "transaction_type": movement.transaction_type,
        "user_id": movement.user_id,
        "currency": movement.currency,
        "amount": stored_decimal(movement.amount),
        "occurred_at": stored_instant(movement.occurred_at),
    }


class MemoryAccruals:
    def __init__(self) -> None:
        # By reference, in claim order; each in the shape it would have as a document.
        self._records: dict[str, dict[str, Any]] = {}
        # The completed runs: (currency, ISO day) → when the first was noted.
        self._runs: dict[tuple[str, str], datetime] = {}

    async def claim(self, due: AccrualDue, at: datetime) -> AccrualRecord:
        fields: dict[str, Any] = {
            "user_id": due.user_id,
            "currency": due.currency,
            "date": due.day.isoformat(),
            "balance": stored_decimal(due.balance),
            "apr": stored_decimal(due.apr),
            "amount": stored_decimal(due.amount),
        }
        if due.reference_id in self._records:
            return self._view(due.reference_id)
        fields |= {"status": PENDING, "reason": None, "created_at": at, "updated_at": at}
        self._records[due.reference_id] = _kept(fields)
        # As the MongoDB store answers a new claim: what it was given, not read back.
        return fields | {"reference_id": due.reference_id}

    async def get(self, reference_id: str) -> AccrualRecord | None:
        return self._view(reference_id) if reference_id in self._records else None

    async def settle(
        self, reference_id: str, status: str, reason: str | None, at: datetime
    ) -> None:
        record = self._records.get(reference_id)
        if record is not None and unsettled(record["status"], record["reason"]):
            record |= {"status": status, "reason": reason, "updated_at": stored_instant(at)}

    async def of_day(self, currency: str, day: date) -> list[AccrualRecord]:
        return [
            self._view(reference_id)
            for reference_id, record in sorted(self._records.items())
            if (record["currency"], record["date"]) == (currency, day.isoformat())
        ]

    async def complete_run(self, currency: str, day: date, at: datetime) -> None:
        self._runs.setdefault((currency, day.isoformat()), stored_instant(at))

    async def run_completed(self, currency: str, day: date) -> bool:
        return (currency, day.isoformat()) in self._runs

    async def newest_completed(self, currency: str) -> date | None:
        days = [day for (of, day) in self._runs if of == currency]
        return date.fromisoformat(max(days)) if days else None

    def _view(self, reference_id: str) -> AccrualRecord:
        return self._records[reference_id] | {"reference_id": reference_id}
