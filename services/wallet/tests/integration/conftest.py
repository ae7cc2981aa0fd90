"""A wallet service running in the test's process against the embedded broker (and MongoDB)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging.topics import Topics
from shared.wallet_client import WalletClient
from wallet.bootstrap import WalletRuntime, build_runtime
from wallet.settings import WalletSettings


def wallet_settings(bootstrap: str, topics: Topics, **overrides: Any) -> WalletSettings:
    return WalletSettings(
        kafka_bootstrap_servers=bootstrap,
        kafka_topic_prefix=topics.prefix,
        WALLET_CONSUMER_SESSION_TIMEOUT_MS=3000,
        WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS=500,
        **overrides,
    )


async def started(runtime: WalletRuntime, within: float = 30.0) -> WalletRuntime:
    await runtime.start()
    async with asyncio.timeout(within):
        while not await runtime.ready():
            await asyncio.sleep(0.05)
    return runtime


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wallet_runtime(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> AsyncIterator[WalletRuntime]:
    settings = wallet_settings(
        kafka_bootstrap_servers,
        kafka_topics,
        mongodb_url=mongodb_url,
        WALLET_MONGODB_DATABASE=mongo_database.name,
    )
    runtime = await started(build_runtime(settings))
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wallet_client(
    kafka_bootstrap_servers: str, kafka_topics: Topics, wallet_runtime: WalletRuntime
) -> AsyncIterator[WalletClient]:
    async with WalletClient(kafka_bootstrap_servers, topics=kafka_topics, timeout=30) as client:
        yield client
