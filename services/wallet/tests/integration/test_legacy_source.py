"""The legacy collections as migrate reads them, over MongoDB: a row shaped like a ledger wallet is
left out only where the ledger writes its wallets (the `wallets` collection migrated in place), and
an ObjectId referring to a user is read as its hex, as an `_id` is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import pytest_asyncio
from bson import Decimal128, ObjectId
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.testing.fixtures import unique_database_name
from wallet.adapters.legacy_source import MongoLegacySource
from wallet.domain.migration import CollectionMapping, Plan, read_document

USER = ObjectId("64aa00000000000000000007")
# A legacy row that happens to carry an integer `version` and a `holds` field, as the ledger's own
# wallet documents do.
LEDGER_SHAPED = {
    "_id": "b",
    "trader_id": "bob",
    "currency": "BTC",
    "available": Decimal128("3"),
    "locked": Decimal128("1"),
    "version": 4,
    "holds": [],
}
TRADERS = CollectionMapping(
    "trader_balances", "trader_id", "currency", available_field="available", locked_field="locked"
)


@pytest_asyncio.fixture(loop_scope="session")
async def legacy(
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    database = mongo_client[unique_database_name("legacy_source")]
    await database["trader_balances"].insert_many(
        [
            {"_id": "a", "trader_id": USER, "currency": "btc", "available": 1.5},
            dict(LEDGER_SHAPED),
        ]
    )
    await database["wallets"].insert_one({**LEDGER_SHAPED, "trader_id": "carol"})
    try:
        yield database
    finally:
        await mongo_client.drop_database(database.name)


async def plan_of(source: MongoLegacySource, mapping: CollectionMapping) -> Plan:
    plan = Plan()
    async for document in source.documents(mapping.name):
        plan.add(mapping.name, read_document(mapping, document))
    return plan


async def test_a_ledger_shaped_row_is_a_legacy_row_outside_the_collection_migrated_in_place(
    legacy: AsyncDatabase[dict[str, Any]],
) -> None:
    """Before, such a row was left out of every collection: neither planned nor listed."""
    source = MongoLegacySource(legacy, in_place=["wallets"])
    plan = await plan_of(source, TRADERS)
    assert plan.invalid == []
    assert plan.expected() == {
        ("64aa00000000000000000007", "BTC"): {"available": D("1.5"), "locked": 0, "savings": 0},
        ("bob", "BTC"): {"available": D(3), "locked": D(1), "savings": 0},
    }
    # In `wallets` migrated in place, the same shape is the ledger's own wallet: left out.
    in_place = await plan_of(
        source, CollectionMapping("wallets", "trader_id", "currency", "available")
    )
    assert (list(in_place.lines), in_place.invalid) == ([], [])
