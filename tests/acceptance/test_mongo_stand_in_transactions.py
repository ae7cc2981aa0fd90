"""What the wallet relies on from MongoDB transactions, checked against the embedded stand-in that
`make run` and the tests start: a commit the server refuses writes nothing, a write made by someone
else meanwhile survives, and the session the driver reuses afterwards reads and writes committed
data. mongoeco alone left a refused transaction open on its session id, so the next user of that id
read the dead transaction's snapshot (a wallet created since missing, the refused writes present)
and had its own transactions refused; `shared.infra.mongo_server` makes it abort, as MongoDB does."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from shared.infra.mongo import EmbeddedMongo
from shared.infra.net import free_port
from shared.mongo import connect

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def private_mongo_url(tmp_path: Path) -> AsyncIterator[str]:
    """A stand-in of its own: these probes commit conflicting transactions on purpose."""
    if os.environ.get("MONGODB_URL"):
        yield os.environ["MONGODB_URL"]
        return
    server = EmbeddedMongo(free_port(), log_dir=tmp_path)
    await server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def private_mongo_client(
    private_mongo_url: str,
) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client = connect(private_mongo_url)
    try:
        yield client
    finally:
        await client.close()


async def test_a_refused_commit_writes_nothing_and_loses_no_concurrent_write(
    private_mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    mongo_client = private_mongo_client
    db = mongo_client["stand_in_transactions"]
    await db.drop_collection("wallets")
    await db.drop_collection("outcomes")
    await db.wallets.insert_one({"_id": "w", "balance": 0})
    async with mongo_client.start_session() as session:
        await session.start_transaction()
        await db.wallets.update_one({"_id": "w"}, {"$inc": {"balance": 10}}, session=session)
        await db.outcomes.insert_one({"_id": "outcome"}, session=session)
        await db.wallets.update_one({"_id": "w"}, {"$inc": {"balance": 5}})  # another writer
        try:
            await session.commit_transaction()
            committed = True
        except OperationFailure:
            committed = False
    wallet = await db.wallets.find_one({"_id": "w"})
    assert wallet is not None
    if committed:  # a server that orders the two writes: both count
        assert wallet["balance"] == 15
    else:  # refused: only the other writer's change
        assert wallet["balance"] == 5
        assert await db.outcomes.find_one({"_id": "outcome"}) is None


async def test_the_session_id_a_refused_commit_used_reads_and_writes_committed_data(
    private_mongo_client: AsyncMongoClient[dict[str, Any]], private_mongo_url: str
) -> None:
    mongo_client = private_mongo_client
    db = mongo_client["stand_in_sessions"]
    await db.drop_collection("wallets")
    await db.drop_collection("other")
    await db.wallets.insert_one({"_id": "before"})
    refused = mongo_client.start_session()
    await refused.start_transaction()
    await db.wallets.insert_one({"_id": "refused"}, session=refused)
    async with mongo_client.start_session() as other:  # commits first: the refused one conflicts
        await other.start_transaction()
        await db.other.insert_one({"_id": "other"}, session=other)
        await other.commit_transaction()
    conflict: OperationFailure | None = None
    try:
        await refused.commit_transaction()
    except OperationFailure as error:
        conflict = error
    landed = {"before"} if conflict else {"before", "refused"}
    # As MongoDB answers a write conflict: the driver's retry loops rely on the label.
    assert conflict is None or conflict.has_error_label("TransientTransactionError"), conflict
    await refused.end_session()  # its id goes back to the driver's pool, to be used next

    async with mongo_client.start_session() as reused:
        await reused.start_transaction()
        await db.wallets.insert_one({"_id": "after"}, session=reused)
        await reused.commit_transaction()
    landed.add("after")
    # Implicit sessions take ids from the same pool (the most recently ended first).
    seen = {d["_id"] for d in await db.wallets.find({}).to_list()}
    assert seen == landed
    fresh = connect(private_mongo_url)  # ids of its own: what the server stored
    try:
        assert {
            d["_id"] for d in await fresh["stand_in_sessions"].wallets.find({}).to_list()
        } == landed
    finally:
        await fresh.close()


async def test_a_refused_commit_sent_again_is_refused_again(
    private_mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    # A driver sends a commit again when its answer was lost. For a transaction the server refused
    # (and so aborted), MongoDB answers NoSuchTransaction; an "ok" would report writes that no one
    # will ever read as committed.
    mongo_client = private_mongo_client
    db = mongo_client["stand_in_commit_again"]
    await db.drop_collection("wallets")
    async with mongo_client.start_session() as refused:
        await refused.start_transaction()
        await db.wallets.insert_one({"_id": "refused"}, session=refused)
        await db.wallets.insert_one({"_id": "other"})  # committed meanwhile
        outcomes: list[str] = []
        for _ in range(2):  # the driver allows sending commitTransaction again
            try:
                await refused.commit_transaction()
                outcomes.append("ok")
            except OperationFailure as error:
                outcomes.append(
                    "transient" if error.has_error_label("TransientTransactionError") else "error"
                )
    stored = {d["_id"] for d in await db.wallets.find({}).to_list()}
    if stored == {"refused", "other"}:  # a server that orders the two writes: both count
        assert outcomes == ["ok", "ok"]
    else:
        assert stored == {"other"}
        assert outcomes == ["transient", "transient"]
