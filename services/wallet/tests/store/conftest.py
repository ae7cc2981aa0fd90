"""Fixtures of the store suite: every test runs against the in-memory store and against MongoDB.

MongoDB comes from the shared plugin (`shared.testing.fixtures`): `MONGODB_URL` when set (a real
replica set), otherwise the embedded stand-in, for the whole session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient, MongoClient

from shared.testing.fixtures import unique_database_name
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.adapters.mongo_store import MongoLedgerStore
from wallet.application.ports import LedgerStore


@pytest.fixture(scope="session")
def is_stand_in(mongodb_url: str) -> bool:
    """Whether MongoDB is the embedded stand-in, whose known gaps some tests mark."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_url)
    try:
        return client.admin.command("buildInfo").get("gitVersion") == "mongoeco"
    finally:
        client.close()


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.integration)])
def bare_store(request: pytest.FixtureRequest) -> LedgerStore:
    """A store not yet set up. Sync on purpose: MongoDB fixtures are pulled only by its variant."""
    if request.param == "memory":
        return InMemoryLedgerStore()
    client: AsyncMongoClient[dict[str, Any]] = request.getfixturevalue("mongo_client")
    # A database per test, not per module: the stand-in slows down as collections grow, and tests
    # of one module never see each other's wallets.
    return MongoLedgerStore(client[unique_database_name(f"store_{request.node.originalname}")])


@pytest_asyncio.fixture
async def store(bare_store: LedgerStore) -> AsyncIterator[LedgerStore]:
    if not isinstance(bare_store, MongoLedgerStore):
        yield bare_store
        return
    await bare_store.ensure_indexes()
    try:
        yield bare_store
    finally:
        await bare_store.database.client.drop_database(bare_store.database.name)
