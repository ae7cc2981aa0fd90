"""Reading values back from MongoDB: Decimal128 amounts as Decimal, datetimes as UTC (the shared
readers, under the names the trading features import); and pending records oldest first, a page
at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from shared.mongo import decimal_of as decimal_of
from shared.mongo import utc as utc

type Document = dict[str, Any]


def oldest_first(
    collection: AsyncCollection[Document],
    query: Document,
    limit: int,
    after: tuple[datetime, str] | None,
) -> AsyncIterator[Document]:
    """The documents `query` matches by `created_at`, then `_id`, only those after `after` (the
    `(created_at, _id)` of one it returned) when given, at most `limit`: a relay's page, each
    pass going on after the last (index: the query's fields, then `created_at` and `_id`)."""
    if after is not None:
        created_at, last_id = after
        query = query | {
            "$or": [
                {"created_at": {"$gt": created_at}},
                {"created_at": created_at, "_id": {"$gt": last_id}},
            ]
        }
    return aiter(
        collection.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)]).limit(limit)
    )
