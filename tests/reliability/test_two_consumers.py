"""Two wallet consumers in one group share the partitions of a stream of transfers between
overlapping users, one of them leaving halfway (a rebalance): every currency is conserved and
every command has exactly one outcome.

It runs on whatever `MONGODB_URL` and Kafka the fixtures give: the embedded stand-ins here, a
replica set and a real broker with `USE_TESTCONTAINERS=1` or the URLs set. The stand-in refuses
any commit that overlaps another, so there the two writers meet as write conflicts at commit
(retried by the wallet) and this test proves conservation and one outcome per command through a
rebalance, not the wallet's version guard against a stale read: that guard is proven by
`test_mongo_ledger.py` (concurrent debits on MongoDB, where it fails without the guard) and
`test_concurrency.py` (injected interleavings on the memory store).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging import CommandResult, WalletCommand
from shared.messaging.topics import Topics
from shared.wallet_client import WalletClient
from tests.reliability.checks import check_applied_once, check_ledger
from tests.reliability.commands import deposit, resend, transfer_stream
from tests.reliability.model import key_of
from tests.reliability.runtime import started_wallet
from wallet.adapters.mongo_store import MongoLedgerStore
from wallet.settings import WalletSettings

pytestmark = pytest.mark.slow

USERS = [f"u{i}" for i in range(6)]
TRANSFERS = 300


async def test_two_consumers_conserve_every_currency(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    settings = WalletSettings(
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_topic_prefix=kafka_topics.prefix,
        mongodb_url=mongodb_url,
        WALLET_MONGODB_DATABASE=mongo_database.name,
        WALLET_BATCH_MAX_RECORDS=20,
        WALLET_CONSUMER_SESSION_TIMEOUT_MS=3000,
        WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS=500,
    )
    running = [await started_wallet(settings), await started_wallet(settings)]
    rng = random.Random(6)
    commands: list[WalletCommand] = []
    for transfer in transfer_stream(rng, TRANSFERS, USERS, ("BTC", "USD"), most=200):
        commands.append(transfer)
        if rng.random() < 0.1:  # a producer's resend, as a new message
            commands.append(resend(rng.choice(commands)))
    results: list[CommandResult] = []
    try:
        async with WalletClient(
            kafka_bootstrap_servers, topics=kafka_topics, timeout=180
        ) as client:
            opening = [deposit(u, c, "100", f"open-{u}-{c}") for u in USERS for c in ("BTC", "USD")]
            await asyncio.gather(*(client.send(c) for c in opening))
            half = len(commands) // 2
            sent = [asyncio.create_task(client.send(c)) for c in commands[:half]]
            await asyncio.sleep(0.5)
            await running.pop().stop()  # leaves the group: its partitions move to the other
            sent += [asyncio.create_task(client.send(c)) for c in commands[half:]]
            results = [r for r in await asyncio.gather(*sent) if r is not None]
        assert len(results) == len(commands)
        store = MongoLedgerStore(mongo_database)
        await check_ledger(store)
        outcomes = {o.key: o async for o in store.all_outcomes()}
        assert {key_of(c) for c in commands} <= set(outcomes)
        for command, result in zip(commands, results, strict=True):
            assert (result.original_status or result.status) == outcomes[key_of(command)].status
        check_applied_once([(key_of(c), r) for c, r in zip(commands, results, strict=True)], [])
    finally:
        for runtime in running:
            await runtime.stop()
