"""The legacy balance collections, read through PyMongo.

A collection the ledger replaces in place (the `wallets` collection when the legacy data lives in
the wallet's own database: the first opening credit of a legacy document makes the ledger write its
wallet over it) is copied, before anything is sent, into `<collection>_legacy_snapshot` of the same
database (same `_id`). Planning reads that copy too, so a run stopped part-way and run again still
sees every legacy document the ledger has replaced since. Every other collection is only read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final

from bson import ObjectId, encode
from bson.decimal128 import Decimal128
from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase

from wallet.adapters.mongo_documents import WALLETS, Document, is_ledger_wallet

SNAPSHOT_SUFFIX: Final = "_legacy_snapshot"
_BATCH: Final = 1000


def snapshot_collection(collection: str) -> str:
    """Where the legacy documents of a collection migrated in place are kept."""
    return f"{collection}{SNAPSHOT_SUFFIX}"


def replaced_in_place(source_database: str, ledger_database: str) -> tuple[str, ...]:
    """The collections of the source database the ledger writes over: its `wallets`, when the legacy
    data is in the wallet's own database (same name; a different name is another database)."""
    return (WALLETS,) if source_database == ledger_database else ()


def _plain(value: Any) -> Any:
    # Decimal128 becomes the exact Decimal it stores; an ObjectId (a user's, referring to their
    # document) its hex, as an `_id` is read; embedded documents are read the same way.
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def plain_document(document: Document) -> dict[str, Any]:
    """A legacy document as migration reads it: every Decimal128 the exact Decimal it stores."""
    return {key: _plain(value) for key, value in document.items()}


def id_key(document: Document) -> bytes:
    # An _id as a set member whatever its type (an embedded document is not hashable).
    return encode({"_id": document["_id"]})


def _is_ledgers(document: Document) -> bool:
    # The ledger's own wallet (migrating the `wallets` collection in place), never a legacy row.
    return is_ledger_wallet(document) and "holds" in document


class MongoLegacySource:
    def __init__(
        self, database: AsyncDatabase[dict[str, Any]], *, in_place: Iterable[str] = ()
    ) -> None:
        self._database = database
        self._in_place = frozenset(in_place)

    async def collection_names(self) -> list[str]:
        return list(await self._database.list_collection_names())

    async def preserve(self, collections: Sequence[str]) -> None:
        """Copy the legacy documents of every collection replaced in place into its snapshot.

        A copy is refreshed while its document is still the legacy one in the collection (no
        opening credit of it has applied yet, so a fixed row is taken as fixed); once the ledger
        has replaced the document, its copy is the only record left and is never touched again.
        """
        for collection in collections:
            if collection not in self._in_place:
                continue  # only read
            snapshot = self._database[snapshot_collection(collection)]
            batch: list[ReplaceOne[dict[str, Any]]] = []
            async for document in self._database[collection].find({}).sort("_id", 1):
                if _is_ledgers(document):
                    continue
                batch.append(ReplaceOne({"_id": document["_id"]}, document, upsert=True))
                if len(batch) == _BATCH:
                    await snapshot.bulk_write(batch, ordered=False)
                    batch = []
            if batch:
                await snapshot.bulk_write(batch, ordered=False)

    async def documents(self, collection: str) -> AsyncIterator[Mapping[str, Any]]:
        # Sorted by _id so a report lists rows in the same order on every run.
        seen: set[bytes] = set()
        in_place = collection in self._in_place
        async for document in self._database[collection].find({}).sort("_id", 1):
            if in_place and _is_ledgers(document):
                continue  # elsewhere a row shaped like a ledger wallet is still a legacy row
            seen.add(id_key(document))
            yield plain_document(document)
        if not in_place:
            return
        # Then the legacy documents the ledger has replaced since they were kept, by _id too.
        snapshot = self._database[snapshot_collection(collection)]
        async for document in snapshot.find({}).sort("_id", 1):
            if id_key(document) not in seen:
                yield plain_document(document)
