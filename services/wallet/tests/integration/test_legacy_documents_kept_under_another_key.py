"""Legacy `wallets` documents that `wallet migrate` brings in but the ledger never writes over: a
currency written `btc` or a NOWPayments ticker, a number user id (the ledger's wallet is `BTC`,
`"42"`), or float dust that rounds to nothing at the currency's scale (no credit at all). They
stayed in `wallets`, so `wallet verify` failed and `wallet replay` was refused for good, with
migrate answering `match`; they are brought in, and only one still waiting is listed. On a real
MongoDB server process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from wallet.adapters.legacy_source import MongoLegacySource, replaced_in_place
from wallet.adapters.mongo_store import MongoLedgerStore
from wallet.application.ledger_service import LedgerService
from wallet.application.migration import migrate
from wallet.application.reconciliation import ReplayRefused, replay, verify
from wallet.domain.migration import SEED_WALLETS

from ..component.test_migration_report import LedgerSender

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

LOWERCASE, NUMBER_ID, DUST = (ObjectId(f"65f0000000000000000000c{n}") for n in range(3))


def seed_wallet(user_id: object, currency: str, available: float) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "currency": currency,
        "available_balance": available,
        "locked_balance": 0.0,
        "total_balance": available,
    }


@pytest_asyncio.fixture(loop_scope="session")
async def store(mongo_database: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[MongoLedgerStore]:
    await mongo_database["wallets"].insert_many(
        [
            {"_id": LOWERCASE, **seed_wallet("alice", "btc", 1.5)},
            {"_id": NUMBER_ID, **seed_wallet(42, "ETH", 2.0)},
            {"_id": DUST, **seed_wallet("carol", "BTC", 0.1 + 0.2 - 0.3)},  # 5.55e-17
        ]
    )
    store = MongoLedgerStore(mongo_database)
    await store.ensure_indexes()
    yield store
    for name in await mongo_database.list_collection_names():
        await mongo_database.drop_collection(name)


async def test_brought_in_documents_left_in_wallets_neither_fail_verify_nor_block_replay(
    store: MongoLedgerStore, mongo_database: AsyncDatabase[dict[str, Any]]
) -> None:
    name = mongo_database.name
    source = MongoLegacySource(mongo_database, in_place=replaced_in_place(name, name))
    report = await migrate((SEED_WALLETS,), source, store, LedgerSender(LedgerService(store)))
    assert (report.exit_code, report.match) == (0, True)
    left = {d["_id"] async for d in mongo_database["wallets"].find({"version": {"$exists": False}})}
    assert left == {LOWERCASE, NUMBER_ID, DUST}  # the ledger wrote BTC, "42", and nothing
    assert {(w.user_id, w.currency) async for w in store.all_wallets()} == {
        ("alice", "BTC"),
        ("42", "ETH"),
    }
    assert await verify(store) == []
    await replay(store)
    assert await verify(store) == []
    kept = {d["_id"] async for d in mongo_database["wallets_legacy_snapshot"].find({})}
    assert kept == {LOWERCASE, NUMBER_ID, DUST}  # migrate's record of what it brought in


async def test_documents_not_brought_in_yet_are_listed_and_kept(
    store: MongoLedgerStore, mongo_database: AsyncDatabase[dict[str, Any]]
) -> None:
    """Before migrate: each one holding money is listed, and replay will not drop it; dust that
    rounds to nothing has nothing to bring in."""
    differences = await verify(store)
    assert {(d.subject, d.expected) for d in differences} == {
        ("wallet alice/btc", "a ledger wallet (run wallet migrate)"),
        ("wallet 42/ETH", "a ledger wallet (run wallet migrate)"),
    }
    with pytest.raises(ReplayRefused, match="alice/btc"):
        await replay(store)
    left = {d["_id"] async for d in mongo_database["wallets"].find({})}
    assert left == {LOWERCASE, NUMBER_ID, DUST}
