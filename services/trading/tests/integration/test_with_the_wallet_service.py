"""End to end with the REAL wallet over the embedded Kafka and MongoDB: admin funding of
platform:liquidity, a swap and an express buy with exact balances of the user,
platform:liquidity and platform:fees, and trades the wallet refuses (they move nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from shared.infra.net import free_port
from shared.messaging.topics import Topics
from shared.testing.services import real_wallet, until_healthy
from shared.wallet_client import WalletClient
from trading.bootstrap import build_service, create_trading_app
from trading.conversions.entrypoints import build_conversions_feature
from trading.prices.entrypoints import build_prices_feature
from trading.prices.settings import PriceSettings
from trading.settings import TradingSettings

D = Decimal


@dataclass
class System:
    trading: str
    wallet: str
    http: httpx.AsyncClient
    wallet_client: WalletClient
    until: Callable[..., Awaitable[None]]
    auth: Callable[..., dict[str, str]]

    async def balances(self, user: str) -> dict[str, Decimal]:
        response = await self.http.get(
            f"{self.wallet}/api/wallets/balances/{user}", headers=self.auth(user)
        )
        assert response.status_code == 200, response.text
        return {b["currency"]: D(b["available_balance"]) for b in response.json()["balances"]}

    async def platform(self) -> dict[tuple[str, str], Decimal]:
        response = await self.http.get(
            f"{self.wallet}/api/wallets/platform-balances", headers=self.auth("ops", "admin")
        )
        assert response.status_code == 200, response.text
        return {(a["account"], a["currency"]): D(a["balance"]) for a in response.json()["accounts"]}

    async def deposit(self, user: str, currency: str, amount: str, kind: str) -> None:
        result = await self.wallet_client.credit(
            user_id=user,
            currency=currency,
            amount=amount,
            transaction_type=kind,
            reference_id=f"{kind}:{user}:{currency}",
        )
        assert result is not None
        assert result.status == "applied", result

    async def pin(self, currency: str, price: str) -> None:
        pinned = await self.http.put(
            f"{self.trading}/api/admin/prices",
            json={"currency": currency, "price": price},
            headers=self.auth("ops", "admin"),
        )
        assert pinned.status_code == 200, pinned.text

    async def fund(self, currency: str, amount: str, reference: str) -> None:
        funded = await self.http.post(
            f"{self.trading}/api/admin/liquidity",
            json={"currency": currency, "amount": amount, "reference_id": reference},
            headers=self.auth("ops", "admin"),
        )
        assert funded.status_code == 202, funded.text
        assert funded.json()["status"] == "pending"

        async def completed() -> bool:
            status = await self.http.get(
                f"{self.trading}/api/admin/liquidity/{reference}",
                headers=self.auth("ops", "admin"),
            )
            return bool(status.json()["status"] == "completed")

        await self.until(completed, within=30)

    async def trade(self, route: str, user: str, quote: dict[str, str]) -> dict[str, Any]:
        quoted = await self.http.post(
            f"{self.trading}/api/{route}/quote", json=quote, headers=self.auth(user)
        )
        assert quoted.status_code == 200, quoted.text
        executed = await self.http.post(
            f"{self.trading}/api/{route}/execute",
            json={"quote_id": quoted.json()["quote_id"]},
            headers=self.auth(user),
        )
        assert executed.status_code == 202, executed.text
        assert executed.json()["status"] == "pending"
        key = "swap_id" if route == "swap" else "order_id"
        url = f"{self.trading}/api/{route}/{executed.json()[key]}"
        final: dict[str, Any] = {}

        async def settled() -> bool:
            final.update((await self.http.get(url, headers=self.auth(user))).json())
            return bool(final["status"] != "pending")

        await self.until(settled, within=30)
        again = await self.http.post(
            f"{self.trading}/api/{route}/execute",
            json={"quote_id": quoted.json()["quote_id"]},
            headers=self.auth(user),
        )
        assert (again.status_code, again.json()["error"]["code"]) == (409, "quote_used")
        return final


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    serve_app: Callable[[Any, int], AbstractAsyncContextManager[str]],
    until: Callable[..., Awaitable[None]],
    jwt_secret: str,
    auth_headers: Callable[..., dict[str, str]],
) -> AsyncIterator[System]:
    trading_port = free_port()
    trading = build_service(
        TradingSettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_topic_prefix=kafka_topics.prefix,
            mongodb_url=mongodb_url,
            trading_mongodb_database=mongo_database.name,
            auth_jwt_secret=jwt_secret,
            TRADING_RESULTS_CONSUMER_GROUP=f"trading-e2e-{trading_port}",
            TRADING_RESULTS_SESSION_TIMEOUT_MS=3000,
            TRADING_RESULTS_HEARTBEAT_INTERVAL_MS=500,
        ),
        features=[
            partial(build_prices_feature, settings=PriceSettings(price_feed_interval_seconds=0.5)),
            build_conversions_feature,
        ],
    )
    async with (
        real_wallet(
            kafka_bootstrap_servers, kafka_topics, mongodb_url, mongo_database, jwt_secret
        ) as wallet_url,
        serve_app(create_trading_app(trading), trading_port) as trading_url,
        httpx.AsyncClient(timeout=30.0) as http,
        WalletClient(kafka_bootstrap_servers, topics=kafka_topics, timeout=30) as client,
    ):
        await until_healthy(http, trading_url)
        yield System(trading_url, wallet_url, http, client, until, auth_headers)


async def test_swap_and_express_buy_move_exact_amounts_through_the_ledger(system: System) -> None:
    await system.pin("BTC", "52000")
    await system.pin("ETH", "2800")
    await system.fund("ETH", "1", "treasury-eth-1")
    await system.fund("BTC", "0.01", "treasury-btc-1")
    await system.fund("BTC", "0.01", "treasury-btc-1")  # the same request again: funded once
    assert await system.platform() == {
        ("external:treasury", "BTC"): D("-0.01"),
        ("external:treasury", "ETH"): D("-1"),
        ("platform:liquidity", "BTC"): D("0.01"),
        ("platform:liquidity", "ETH"): D("1"),
    }
    await system.deposit("amy", "BTC", "0.02", "deposit_nowpayments")
    await system.deposit("amy", "GBP", "250.00", "deposit_bank_transfer")

    swap = await system.trade(
        "swap", "amy", {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.01"}
    )
    assert (swap["status"], swap["fee"], swap["rate"], swap["to_amount"]) == (
        "completed",
        "0.00001",
        "18.478571428571428571",
        "0.184600928571428571",
    )
    bought = await system.trade(
        "express-buy",
        "amy",
        {"fiat_currency": "GBP", "fiat_amount": "100.00", "crypto_currency": "BTC"},
    )
    assert (bought["status"], bought["fee"], bought["crypto_amount"]) == (
        "completed",
        "1.5",
        "0.00187528",
    )
    assert await system.balances("amy") == {
        "BTC": D("0.02") - D("0.01") + D("0.00187528"),
        "ETH": D("0.184600928571428571"),
        "GBP": D("150.00"),
    }
    platform = await system.platform()
    assert platform[("platform:fees", "BTC")] == D("0.00001")
    assert platform[("platform:fees", "GBP")] == D("1.5")
    assert platform[("platform:liquidity", "BTC")] == D("0.01") + D("0.00999") - D("0.00187528")
    assert platform[("platform:liquidity", "ETH")] == D("1") - D("0.184600928571428571")
    assert platform[("platform:liquidity", "GBP")] == D("98.5")


async def test_trades_the_wallet_refuses_fail_with_its_reason_and_move_nothing(
    system: System,
) -> None:
    await system.pin("BTC", "52000")
    await system.pin("ETH", "2800")
    await system.deposit("bea", "BTC", "0.5", "deposit_nowpayments")
    before_user, before_platform = await system.balances("bea"), await system.platform()

    # 0.5 BTC is ~9.2 ETH: more than platform:liquidity holds.
    too_big = await system.trade(
        "swap", "bea", {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.5"}
    )
    assert (too_big["status"], too_big["reason"]) == ("failed", "insufficient_liquidity")
    # More GBP than bea has.
    no_funds = await system.trade(
        "express-buy",
        "bea",
        {"fiat_currency": "GBP", "fiat_amount": "10.00", "crypto_currency": "BTC"},
    )
    assert (no_funds["status"], no_funds["reason"]) == ("failed", "insufficient_funds")
    assert await system.balances("bea") == before_user
    assert await system.platform() == before_platform
