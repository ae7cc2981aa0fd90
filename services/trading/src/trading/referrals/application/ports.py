"""What referrals need from storage: bindings and commission records. Two adapters keep them,
MongoDB (`adapters.mongo`) and memory (`adapters.memory`); one contract suite runs on both.

Instants are kept as MongoDB keeps them: in UTC, to the millisecond (rounded down), and queries
compare them at that precision. Amounts are kept exact, as IEEE 754 decimal128 holds them (a value
of more than 34 significant digits is refused with `decimal.Inexact`, nothing stored).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from shared.paging import Position
from trading.referrals.domain.bindings import Binding
from trading.referrals.domain.commissions import CommissionDue

# A commission record: `reference_id`, the CommissionDue fields, `status` (pending | paid |
# failed), `reason`, `created_at`, `updated_at` and, once asked again, `asked_at`. A copy: changing
# it changes nothing stored.
type CommissionRecord = dict[str, Any]


class Bindings(Protocol):
    """Who invited whom: one binding per invitee, never deleted."""

    async def insert(self, invitee_id: str, referrer_id: str) -> Binding | None:
        """Stores the binding, unstamped (read it back for its `bound_at`): None if stored, else
        the binding the invitee already has (read, so stamped if it was not yet)."""
        ...

    async def of(self, invitee_id: str) -> Binding | None:
        """The invitee's binding; an unstamped one is stamped now, by the store's clock, once
        (the first stamp stays, whoever else reads it at the same time)."""
        ...

    async def of_many(self, invitee_ids: Iterable[str]) -> dict[str, Binding]:
        """The bindings of those of `invitee_ids` that have one (stamped as by `of`)."""
        ...

    async def invitees_of(self, referrer_id: str) -> int:
        """How many users are bound to the referrer (stamped or not)."""
        ...


class Commissions(Protocol):
    """One record per commission reference, `pending` until the wallet's result settles it."""

    async def claim(self, due: CommissionDue, at: datetime) -> CommissionRecord:
        """The record of `due`'s reference: new (pending, created at `at`) or, if the reference
        has one already, that one as stored the first time (whatever `due` says now)."""
        ...

    async def get(self, reference_id: str) -> CommissionRecord | None: ...

    async def settle(
        self, reference_id: str, status: str, reason: str | None, at: datetime
    ) -> None:
        """pending, or failed with `processing_failed` (the wallet recorded no outcome: the
        payment may still apply) → `status` (paid | failed); a record settled otherwise is not
        changed again."""
        ...

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> list[CommissionRecord]:
        """Unsettled records (`trading.payout_status.unsettled`: pending, or failed with
        `processing_failed`) whose command was last sent before `asked_before` (when asked again,
        `asked_at`, else when claimed), oldest first (by `created_at`, then `reference_id`), only
        those after `after` (the `(created_at, reference_id)` of one this returned) when given,
        at most `limit` of them (0: no limit)."""
        ...

    async def mark_asked(self, reference_id: str, at: datetime) -> None:
        """The command of an unsettled record was sent again at `at` (a settled one is
        untouched)."""
        ...

    async def earned_by(self, referrer_id: str) -> dict[str, Decimal]:
        """What the referrer has been paid, per currency (records `paid`)."""
        ...
