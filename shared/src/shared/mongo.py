"""One way to open MongoDB: timezone-aware UTC datetimes, so nothing naive leaks into the domain;
reading values back: Decimal128 amounts as Decimal, datetimes as UTC; a relay's page of records
oldest first, each pass going on after the last; and dropping the indexes an earlier version made
that newer ones replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from shared.outbox import Unpublished
from shared.paging import Position


def connect(url: str, **options: Any) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(url, tz_aware=True, **options)


# The server's code for dropping an index that is not there (another instance dropped it first).
_INDEX_NOT_FOUND = 27


async def drop_replaced_indexes(
    collection: AsyncCollection[dict[str, Any]], names: Iterable[str]
) -> list[str]:
    """Drop, where they exist, these indexes an earlier version created (`create_index` leaves
    them when their successor gets a new name): each is a prefix of the one that replaced it,
    which serves its queries, so kept it only costs every write. The names it dropped."""
    present = {index["name"] async for index in await collection.list_indexes()}
    dropped = []
    for name in names:
        if name not in present:
            continue
        try:
            await collection.drop_index(name)
        except OperationFailure as error:
            if error.code != _INDEX_NOT_FOUND:
                raise
            continue
        dropped.append(name)
    return dropped


def decimal_of(value: Any) -> Decimal:
    return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))


def utc(value: datetime) -> datetime:
    # Drivers hand back naive datetimes unless the client was made tz-aware; all are UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def oldest_first(
    collection: AsyncCollection[dict[str, Any]],
    query: dict[str, Any],
    limit: int,
    after: Position | None,
    field: str = "created_at",
) -> AsyncIterator[dict[str, Any]]:
    """The documents `query` matches by `field` (an instant), then `_id`, only those after
    `after` (the `(field, _id)` of one it returned) when given, at most `limit`: a relay's page,
    each pass going on after the last (index: the query's fields, then `field` and `_id`)."""
    if after is not None:
        at, last_id = after
        later = {"$or": [{field: {"$gt": at}}, {field: at, "_id": {"$gt": last_id}}]}
        # A query's own `$or` is kept beside this one, not replaced by it.
        query = {"$and": [query, later]} if "$or" in query else query | later
    return aiter(collection.find(query).sort([(field, ASCENDING), ("_id", ASCENDING)]).limit(limit))


async def unpublished(
    collection: AsyncCollection[dict[str, Any]],
    older_than: datetime,
    limit: int,
    after: Position | None,
) -> list[Unpublished]:
    """An embedded outbox's page (`shared.outbox.Outbox.unpublished`): the entries not published
    and recorded before `older_than` of at most `limit` documents, oldest first by `created_at`,
    then `_id` (index: `outbox.published`, `created_at`, `_id`). Commands come back as stored,
    unparsed: one the command model refuses is the relay's to report, not a failed read."""
    query = {"outbox": {"$elemMatch": {"published": False, "created_at": {"$lt": older_than}}}}
    return [
        Unpublished(document["_id"], utc(document["created_at"]), entry["command"])
        async for document in oldest_first(collection, query, limit, after)
        for entry in document["outbox"]
        if not entry["published"] and utc(entry["created_at"]) < older_than
    ]


class MongoDeadLetters:
    """Messages a consumer could not handle after its retries (shared.results_consumer's
    `DeadLetters`), kept in the service's own collection for a person to look at."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]], collection: str) -> None:
        self._letters = database[collection]

    async def add(self, raw: bytes, reason: str, now: datetime) -> None:
        await self._letters.insert_one({"raw": raw, "reason": reason, "at": now})

    async def all(self) -> list[dict[str, Any]]:
        return await self._letters.find({}).sort("at", ASCENDING).to_list()
