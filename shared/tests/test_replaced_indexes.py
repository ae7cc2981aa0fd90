"""Indexes an earlier version made, replaced by ones with a trailing key: dropped where present,
on a real MongoDB server process, and nothing else is touched."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.mongo import drop_replaced_indexes

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_only_the_named_indexes_that_exist_are_dropped(
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    collection = mongo_database["replaced_indexes"]
    await collection.create_index([("status", ASCENDING), ("updated_at", ASCENDING)])
    await collection.create_index(
        [("status", ASCENDING), ("updated_at", ASCENDING), ("_id", ASCENDING)]
    )
    await collection.create_index([("user_id", ASCENDING)])
    names = ["status_1_updated_at_1", "outbox.published_1"]  # the second was never made here
    assert await drop_replaced_indexes(collection, names) == ["status_1_updated_at_1"]
    left = {index["name"] async for index in await collection.list_indexes()}
    assert left == {"_id_", "status_1_updated_at_1__id_1", "user_id_1"}
    assert await drop_replaced_indexes(collection, names) == []  # a second start: nothing to do
