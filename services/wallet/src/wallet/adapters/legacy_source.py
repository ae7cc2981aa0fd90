"""The legacy balance collections, read (never written) through PyMongo."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from bson.decimal128 import Decimal128
from pymongo.asynchronous.database import AsyncDatabase

from wallet.adapters.mongo_documents import is_ledger_wallet


def _plain(value: Any) -> Any:
    # Decimal128 becomes the exact Decimal it stores; embedded documents are read the same way.
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class MongoLegacySource:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._database = database

    async def collection_names(self) -> list[str]:
        return list(await self._database.list_collection_names())

    async def documents(self, collection: str) -> AsyncIterator[Mapping[str, Any]]:
        # Sorted by _id so a report lists rows in the same order on every run.
        async for document in self._database[collection].find({}).sort("_id", 1):
            if is_ledger_wallet(document) and "holds" in document:
                continue  # the ledger's own wallet (migrating the `wallets` collection in place)
            yield {key: _plain(value) for key, value in document.items()}
