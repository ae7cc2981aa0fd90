"""Each service's start on a database an earlier version indexed: the indexes that paged ones
replaced (each a prefix of its successor) are dropped, the successors are there, and a second
start changes nothing. On a real MongoDB server process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from ipn_gateway.adapters import mongo as gateway
from p2p.adapters import mongo as p2p
from trading.savings.adapters import mongo as savings
from trading.spot.adapters.mongo import MongoSpotStore

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

type Database = AsyncDatabase[dict[str, Any]]


async def _spot(database: Database) -> None:
    await MongoSpotStore(database).ensure_indexes()


# (service, its ensure_indexes, {collection: [(an earlier version's index keys, its successor)]})
REPLACED: list[
    tuple[str, Callable[[Database], Awaitable[None]], dict[str, list[tuple[str, str]]]]
] = [
    (
        "ipn-gateway",
        gateway.ensure_indexes,
        {
            gateway.ORDERS: [("closed,created_at", "closed_1_created_at_1__id_1")],
            gateway.PAYMENTS: [
                ("outbox.published", "outbox.published_1_created_at_1__id_1"),
                (
                    "parent_payment_id,poll_closed,created_at",
                    "parent_payment_id_1_poll_closed_1_created_at_1__id_1",
                ),
            ],
            gateway.WITHDRAWALS: [
                ("outbox.published", "outbox.published_1_created_at_1__id_1"),
                ("status,updated_at", "status_1_updated_at_1__id_1"),
            ],
            gateway.REVIEWS: [("outbox.published", "outbox.published_1_created_at_1__id_1")],
        },
    ),
    (
        "p2p",
        p2p.ensure_indexes,
        {
            p2p.TRADES: [
                ("status,payment_deadline", "status_1_payment_deadline_1__id_1"),
                ("status,updated_at", "status_1_updated_at_1__id_1"),
                ("outbox.published", "outbox.published_1_created_at_1__id_1"),
            ]
        },
    ),
    ("spot", _spot, {"spot_orders": [("status,expires_at", "status_1_expires_at_1__id_1")]}),
    (
        "savings",
        savings.ensure_indexes,
        {savings.TRANSFERS: [("status,created_at", "status_1_created_at_1__id_1")]},
    ),
]


@pytest.mark.parametrize(("service", "ensure", "replaced"), REPLACED, ids=[r[0] for r in REPLACED])
async def test_a_start_drops_the_indexes_paged_ones_replaced(
    mongo_database: Database,
    service: str,
    ensure: Callable[[Database], Awaitable[None]],
    replaced: dict[str, list[tuple[str, str]]],
) -> None:
    old_names = {}
    for collection, pairs in replaced.items():
        await mongo_database.drop_collection(collection)
        for keys, _ in pairs:
            name = await mongo_database[collection].create_index(
                [(key, ASCENDING) for key in keys.split(",")]
            )
            old_names.setdefault(collection, set()).add(name)
    for _ in range(2):  # a second start finds nothing to drop
        await ensure(mongo_database)
        for collection, pairs in replaced.items():
            names = {i["name"] async for i in await mongo_database[collection].list_indexes()}
            assert not names & old_names[collection], (service, collection)
            assert {successor for _, successor in pairs} <= names, (service, collection)
