"""MongoDB storage of referrals: bindings keyed by the invitee (so a user binds once, even when
two requests race) and commissions keyed by their wallet reference (so each is paid once).

A binding is inserted without `bound_at` and stamped by its first reader (the bind request right
after its insert, or the commission consumer if it gets there first), with the clock read after
the binding was found: `bound_at` is an instant at which the binding was already visible. A fee
event read before the insert committed found no binding, but its transaction occurred before
that read, so before `bound_at`; every fee that occurred at or after `bound_at` is read when the
binding is visible, and earns its commission. A stamp taken before the insert (as it was) left
fees of the moment between the stamp and the commit counted yet unpaid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from bson import Decimal128
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.money import add
from shared.paging import Position
from trading.mongo_values import decimal_of, oldest_first, utc
from trading.payout_status import PAID
from trading.payouts import UNSETTLED, PayoutRecords
from trading.referrals.domain.bindings import Binding
from trading.referrals.domain.commissions import CommissionDue

type Document = dict[str, Any]

BINDINGS: Final = "referral_bindings"
COMMISSIONS: Final = "referral_commissions"


async def ensure_indexes(database: AsyncDatabase[Document]) -> None:
    await database[BINDINGS].create_index([("referrer_id", ASCENDING)])
    await database[COMMISSIONS].create_index([("referrer_id", ASCENDING)])
    await database[COMMISSIONS].create_index([("status", ASCENDING), ("asked_at", ASCENDING)])
    # pending commissions oldest first, a page at a time (the ask-again pass)
    await database[COMMISSIONS].create_index(
        [("status", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
    )


def _binding(document: Document) -> Binding:
    return Binding(
        invitee_id=document["_id"],
        referrer_id=document["referrer_id"],
        bound_at=utc(document["bound_at"]),
    )


class MongoBindings:
    def __init__(self, database: AsyncDatabase[Document], clock: Callable[[], datetime]) -> None:
        self._collection = database[BINDINGS]
        self._clock = clock

    async def insert(self, invitee_id: str, referrer_id: str) -> Binding | None:
        """Stores the binding (not stamped yet: read it back for its `bound_at`); None if it is
        stored, else the binding the invitee already has."""
        try:
            await self._collection.insert_one(
                {"_id": invitee_id, "referrer_id": referrer_id, "bound_at": None}
            )
        except DuplicateKeyError:
            existing = await self.of(invitee_id)
            assert existing is not None  # bindings are never deleted
            return existing
        return None

    async def of(self, invitee_id: str) -> Binding | None:
        found = await self._collection.find_one({"_id": invitee_id})
        return await self._stamped(found) if found else None

    async def of_many(self, invitee_ids: Iterable[str]) -> dict[str, Binding]:
        ids = sorted(set(invitee_ids))
        if not ids:
            return {}
        cursor = self._collection.find({"_id": {"$in": ids}})
        return {d["_id"]: await self._stamped(d) async for d in cursor}

    async def _stamped(self, document: Document) -> Binding:
        """The binding of a found document, stamped now if it was not yet (the first stamp stays)."""
        if document["bound_at"] is None:
            await self._collection.update_one(
                {"_id": document["_id"], "bound_at": None}, {"$set": {"bound_at": self._clock()}}
            )
            found = await self._collection.find_one({"_id": document["_id"]})
            assert found is not None  # bindings are never deleted
            document = found
        return _binding(document)

    async def invitees_of(self, referrer_id: str) -> int:
        return await self._collection.count_documents({"referrer_id": referrer_id})


class MongoCommissions(PayoutRecords):
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        super().__init__(database[COMMISSIONS], decimal_fields=("amount", "fee", "rate"))

    async def claim(self, due: CommissionDue, at: datetime) -> Document:
        """The record of `due`'s reference: new (pending) or the one stored the first time."""
        fields = {
            "referrer_id": due.referrer_id,
            "referred_user_id": due.referred_user_id,
            "currency": due.currency,
            "amount": Decimal128(due.amount),
            "fee": Decimal128(due.fee),
            "rate": Decimal128(due.rate),
            "source_transaction_id": due.source_transaction_id,
            "source_transaction_type": due.source_transaction_type,
            "source_occurred_at": due.source_occurred_at,
        }
        return await self._claim(due.reference_id, fields, at)

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> list[Document]:
        """Commissions still unsettled whose command was last sent before `asked_before`: when
        asked again (`asked_at`), else when claimed (it is sent right after its claim); oldest
        first, a page after `after`."""
        query = {
            "$and": [
                UNSETTLED,
                {
                    "$or": [
                        {"asked_at": {"$lt": asked_before}},
                        {"asked_at": None, "created_at": {"$lt": asked_before}},
                    ]
                },
            ]
        }
        page = oldest_first(self._collection, query, limit, after)
        return [self._view(document) async for document in page]

    async def mark_asked(self, reference_id: str, at: datetime) -> None:
        await self._collection.update_one(
            {"_id": reference_id, **UNSETTLED}, {"$set": {"asked_at": at}}
        )

    async def earned_by(self, referrer_id: str) -> dict[str, Decimal]:
        """What the referrer has been paid, per currency (commissions the wallet applied)."""
        earned: dict[str, Decimal] = {}
        async for row in self._collection.find({"referrer_id": referrer_id, "status": PAID}):
            currency = row["currency"]
            earned[currency] = add(earned.get(currency, Decimal(0)), decimal_of(row["amount"]))
        return earned
