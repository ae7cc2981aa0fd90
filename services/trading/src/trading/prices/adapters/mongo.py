"""Staging pins in MongoDB (`price_pins`, one document per currency)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase


class MongoPins:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._pins: AsyncCollection[dict[str, Any]] = database["price_pins"]

    async def all(self) -> dict[str, Decimal]:
        return {doc["_id"]: doc["price"].to_decimal() async for doc in self._pins.find({})}

    async def pin(self, currency: str, price: Decimal, by: str, at: datetime) -> None:
        await self._pins.replace_one(
            {"_id": currency},
            {"_id": currency, "price": Decimal128(price), "pinned_by": by, "pinned_at": at},
            upsert=True,
        )

    async def unpin(self, currency: str) -> bool:
        deleted = await self._pins.delete_one({"_id": currency})
        return deleted.deleted_count == 1
