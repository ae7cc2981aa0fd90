"""In-memory storage of referrals with the MongoDB store's guarantees (tests, one process).

Each method reads and writes without an await in between, so in one event loop it is atomic: a
binding is stored once per invitee and stamped once, a commission is claimed once per reference
and settled once. What it keeps is what MongoDB would keep: instants in UTC to the millisecond
(rounded down, and compared at that precision), amounts as decimal128 holds them (more than 34
significant digits raise `decimal.Inexact`, as encoding them does). Records are handed out as
copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.money import add
from shared.paging import Position
from trading.memory_values import stored_decimal, stored_instant
from trading.payout_status import PAID, PENDING, unsettled
from trading.referrals.application.ports import CommissionRecord
from trading.referrals.domain.bindings import Binding
from trading.referrals.domain.commissions import CommissionDue


@dataclass
class _Binding:
    referrer_id: str
    bound_at: datetime | None


class MemoryBindings:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._bindings: dict[str, _Binding] = {}

    async def insert(self, invitee_id: str, referrer_id: str) -> Binding | None:
        if invitee_id in self._bindings:
            return self._stamped(invitee_id)
        self._bindings[invitee_id] = _Binding(referrer_id, None)
        return None

    async def of(self, invitee_id: str) -> Binding | None:
        return self._stamped(invitee_id) if invitee_id in self._bindings else None

    async def of_many(self, invitee_ids: Iterable[str]) -> dict[str, Binding]:
        return {i: self._stamped(i) for i in sorted(set(invitee_ids)) if i in self._bindings}

    def _stamped(self, invitee_id: str) -> Binding:
        stored = self._bindings[invitee_id]
        if stored.bound_at is None:
            stored.bound_at = stored_instant(self._clock())
        return Binding(invitee_id, stored.referrer_id, stored.bound_at)

    async def invitees_of(self, referrer_id: str) -> int:
        return sum(1 for b in self._bindings.values() if b.referrer_id == referrer_id)


class MemoryCommissions:
    def __init__(self) -> None:
        # By reference, in claim order; each in the shape it would have as a document.
        self._records: dict[str, dict[str, Any]] = {}

    async def claim(self, due: CommissionDue, at: datetime) -> CommissionRecord:
        fields: dict[str, Any] = {
            "referrer_id": due.referrer_id,
            "referred_user_id": due.referred_user_id,
            "currency": due.currency,
            "amount": stored_decimal(due.amount),
            "fee": stored_decimal(due.fee),
            "rate": stored_decimal(due.rate),
            "source_transaction_id": due.source_transaction_id,
            "source_transaction_type": due.source_transaction_type,
            "source_occurred_at": due.source_occurred_at,
        }
        if due.reference_id in self._records:
            return self._view(due.reference_id)
        fields |= {"status": PENDING, "reason": None, "created_at": at, "updated_at": at}
        self._records[due.reference_id] = {
            name: stored_instant(value) if isinstance(value, datetime) else value
            for name, value in fields.items()
        }
        # As the MongoDB store answers a new claim: what it was given, not read back.
        return fields | {"reference_id": due.reference_id}

    async def get(self, reference_id: str) -> CommissionRecord | None:
        return self._view(reference_id) if reference_id in self._records else None

    async def settle(
        self, reference_id: str, status: str, reason: str | None, at: datetime
    ) -> None:
        record = self._records.get(reference_id)
        if record is not None and unsettled(record["status"], record["reason"]):
            record |= {"status": status, "reason": reason, "updated_at": stored_instant(at)}

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> list[CommissionRecord]:
        cutoff = stored_instant(asked_before)
        start = None if after is None else (stored_instant(after[0]), after[1])
        found = sorted(
            (
                self._view(reference_id)
                for reference_id, record in self._records.items()
                if unsettled(record["status"], record["reason"])
                and (record.get("asked_at") or record["created_at"]) < cutoff
                and (start is None or (record["created_at"], reference_id) > start)
            ),
            key=lambda record: (record["created_at"], record["reference_id"]),
        )
        # A limit of 0 is no limit, a negative one counts as its absolute value (as a cursor's).
        return found[: abs(limit)] if limit else found

    async def mark_asked(self, reference_id: str, at: datetime) -> None:
        record = self._records.get(reference_id)
        if record is not None and unsettled(record["status"], record["reason"]):
            record["asked_at"] = stored_instant(at)

    async def earned_by(self, referrer_id: str) -> dict[str, Decimal]:
        earned: dict[str, Decimal] = {}
        for record in self._records.values():
            if record["referrer_id"] == referrer_id and record["status"] == PAID:
                currency = record["currency"]
                earned[currency] = add(earned.get(currency, Decimal(0)), record["amount"])
        return earned

    def _view(self, reference_id: str) -> CommissionRecord:
        return self._records[reference_id] | {"reference_id": reference_id}
