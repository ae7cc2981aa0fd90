"""The real wallet service (its ledger in MongoDB, commands and results over Kafka) for the P2P
integration tests, and a client that speaks to it as users and admins do."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import make_token
from shared.messaging.topics import Topics
from shared.testing.services import eventually as shared_eventually
from shared.testing.services import real_wallet, serving
from shared.wallet_client import WalletClient

JWT_SECRET = "p2p-integration-jwt-secret-of-at-least-32-bytes"
D = Decimal


# Results travel through Kafka and the embedded MongoDB is slow: these tests wait longer.
eventually = partial(shared_eventually, within=30.0, interval=0.1)


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
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> AsyncIterator[Wallet]:
    async with (
        real_wallet(
            kafka_bootstrap_servers, kafka_topics, mongodb_url, mongo_database, JWT_SECRET
        ) as url,
        httpx.AsyncClient(timeout=30.0) as http,
        WalletClient(kafka_bootstrap_servers, topics=kafka_topics) as client,
    ):
        yield Wallet(url, http, client)
