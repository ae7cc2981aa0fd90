"""Running services inside a test: an ASGI app on a real loopback port, polling until something
is true, and the real wallet service (its ledger in MongoDB, commands and results over Kafka)
for the tests of the services that drive it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import uvicorn
from pymongo.asynchronous.database import AsyncDatabase

from shared.infra.net import free_port
from shared.messaging.topics import Topics


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    """An ASGI app on a real loopback port (lifespan included) for the duration of the block."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during startup")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def eventually(
    probe: Callable[[], Awaitable[bool]], within: float = 15.0, interval: float = 0.05
) -> None:
    """Wait until `probe()` is true (results travel through Kafka asynchronously)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(interval)


async def until_healthy(http: httpx.AsyncClient, url: str, within: float = 60.0) -> None:
    """Wait until the service at `url` answers /healthz with 200 (joined its consumer group)."""

    async def healthy() -> bool:
        return (await http.get(f"{url}/healthz")).status_code == 200

    await eventually(healthy, within=within)


@contextlib.asynccontextmanager
async def real_wallet(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    jwt_secret: str,
) -> AsyncIterator[str]:
    """The wallet service, healthy, on a free port (its URL), with its ledger in a database of
    its own next to the test module's; the database is dropped afterwards. Its consumer leaves a
    dead group quickly, so a test's restarts rebalance fast."""
    # Imported here: the wallet package depends on shared, not the other way round; only the
    # tests of the services that drive the wallet call this.
    from wallet.bootstrap import create_app
    from wallet.settings import WalletSettings

    wallet_database = f"{mongo_database.name[:50]}_wallet"
    app = create_app(
        WalletSettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_topic_prefix=kafka_topics.prefix,
            mongodb_url=mongodb_url,
            auth_jwt_secret=jwt_secret,
            WALLET_MONGODB_DATABASE=wallet_database,
            WALLET_CONSUMER_SESSION_TIMEOUT_MS=3000,
            WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS=500,
        )
    )
    try:
        async with serving(app, free_port()) as url, httpx.AsyncClient(timeout=30.0) as http:
            await until_healthy(http, url)
            yield url
    finally:
        await mongo_database.client.drop_database(wallet_database)
