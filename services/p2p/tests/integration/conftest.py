"""The real wallet service (its ledger in MongoDB, commands and results over Kafka) for the P2P
integration tests, and a client that speaks to it as users and admins do."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
import uvicorn
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import make_token
from shared.infra.net import free_port
from shared.messaging.topics import Topics
from shared.wallet_client import WalletClient
from wallet.bootstrap import create_app as create_wallet_app
from wallet.settings import WalletSettings

JWT_SECRET = "p2p-integration-jwt-secret-of-at-least-32-bytes"
D = Decimal


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


async def eventually(probe: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Wait until `probe()` is true (results travel through Kafka asynchronously)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.1)


def auth(user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}


@dataclass
class Wallet:
    """The wallet service, and the helpers the P2P integration tests share (test modules cannot
    import each other under importlib mode; they get these through the fixture)."""

    url: str
    http: httpx.AsyncClient
    client: WalletClient
    jwt_secret: str = JWT_SECRET
    auth = staticmethod(auth)
    eventually = staticmethod(eventually)
    serving = staticmethod(serving)

    async def fund(self, user: str, amount: str, currency: str = "BTC") -> None:
        result = await self.client.credit(
            user_id=user,
            currency=currency,
            amount=amount,
            transaction_type="deposit_nowpayments",
            reference_id=f"funding:{user}:{uuid.uuid4().hex[:8]}",
            result_timeout=30,
        )
        assert result is not None
        assert result.status == "applied", result

    async def balance(self, user: str, currency: str = "BTC") -> tuple[Decimal, Decimal]:
        response = await self.http.get(
            f"{self.url}/api/wallets/balances/{user}", headers=auth(user)
        )
        assert response.status_code == 200, response.text
        for row in response.json()["balances"]:
            if row["currency"] == currency:
                return D(row["available_balance"]), D(row["locked_balance"])
        return D(0), D(0)

    async def fees(self, currency: str = "BTC") -> Decimal:
        response = await self.http.get(
            f"{self.url}/api/wallets/platform-balances", headers=auth("auditor", "admin")
        )
        assert response.status_code == 200, response.text
        for row in response.json()["accounts"]:
            if (row["account"], row["currency"]) == ("platform:fees", currency):
                return D(row["balance"])
        return D(0)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wallet_service(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> AsyncIterator[Wallet]:
    wallet_database = f"{mongo_database.name[:50]}_wallet"
    app = create_wallet_app(
        WalletSettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_topic_prefix=kafka_topics.prefix,
            mongodb_url=mongodb_url,
            auth_jwt_secret=JWT_SECRET,
            WALLET_MONGODB_DATABASE=wallet_database,
            WALLET_CONSUMER_SESSION_TIMEOUT_MS=3000,
            WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS=500,
        )
    )
    try:
        async with (
            serving(app, free_port()) as url,
            httpx.AsyncClient(timeout=30.0) as http,
            WalletClient(kafka_bootstrap_servers, topics=kafka_topics) as client,
        ):

            async def healthy() -> bool:
                return (await http.get(f"{url}/healthz")).status_code == 200

            await eventually(healthy, within=60)
            yield Wallet(url, http, client)
    finally:
        await mongo_client.drop_database(wallet_database)
