"""Payouts the service sends the wallet (savings interest, referral commissions) are recorded
before they are sent: one document per wallet reference, `pending` until the wallet's result
makes it `paid` or `failed`. The insert on the reference decides once what is paid under it, so
a rerun or a redelivered event resends the very same command, or nothing once it is settled.

A payout failed with `processing_failed` is not settled for good (`trading.payout_status`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.messaging.outcomes import UNRECORDED_REFUSAL
from trading.mongo_values import decimal_of
from trading.payout_status import FAILED, PENDING

type Document = dict[str, Any]

# `unsettled`, as a MongoDB filter.
UNSETTLED: Final = {"$or": [{"status": PENDING}, {"status": FAILED, "reason": UNRECORDED_REFUSAL}]}


class PayoutRecords:
    def __init__(
        self, collection: AsyncCollection[Document], decimal_fields: tuple[str, ...]
    ) -> None:
        self._collection = collection
        self._decimal_fields = decimal_fields

    async def _claim(self, reference_id: str, fields: Document, at: datetime) -> Document:
        """The record of `reference_id`: new (pending, with `fields`) or the one stored first."""
        document = {"_id": reference_id, **fields}
        document |= {"status": PENDING, "reason": None, "created_at": at, "updated_at": at}
        try:
            await self._collection.insert_one(document)
        except DuplicateKeyError:
            existing = await self._collection.find_one({"_id": reference_id})
            assert existing is not None  # records are never deleted
            return self._view(existing)
        return self._view(document)

    async def get(self, reference_id: str) -> Document | None:
        found = await self._collection.find_one({"_id": reference_id})
        return self._view(found) if found else None

    async def settle(
        self, reference_id: str, status: str, reason: str | None, at: datetime
    ) -> None:
        """unsettled → paid | failed (the filter expects it `unsettled`): a settled record is not
        changed again."""
        await self._collection.update_one(
            {"_id": reference_id, **UNSETTLED},
            {"$set": {"status": status, "reason": reason, "updated_at": at}},
        )

    def _view(self, document: Document) -> Document:
        record = dict(document)
        record["reference_id"] = record.pop("_id")
        for field in self._decimal_fields:
            record[field] = decimal_of(document[field])
        return record
