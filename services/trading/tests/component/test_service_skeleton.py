"""The composition root over the real embedded Kafka and MongoDB: /healthz waits for the broker,
the consumers and the database; the built-in feed has prices at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from shared.infra.net import free_port
from shared.messaging.topics import Topics
from shared.money import CURRENCIES
from trading.bootstrap import build_service, create_trading_app
from trading.settings import TradingSettings


async def test_a_fresh_service_is_healthy_and_has_a_price_for_every_crypto(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    serve_app: Callable[[Any, int], AbstractAsyncContextManager[str]],
    until: Callable[..., Awaitable[None]],
    jwt_secret: str,
) -> None:
    settings = TradingSettings(
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_topic_prefix=kafka_topics.prefix,
        mongodb_url=mongodb_url,
        trading_mongodb_database=mongo_database.name,
        auth_jwt_secret=jwt_secret,
        TRADING_RESULTS_CONSUMER_GROUP=f"trading-skeleton-{free_port()}",
        TRADING_RESULTS_SESSION_TIMEOUT_MS=3000,
        TRADING_RESULTS_HEARTBEAT_INTERVAL_MS=500,
    )
    service = build_service(settings)
    assert not await service.ready()  # nothing started yet
    async with (
        serve_app(create_trading_app(service), free_port()) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):

        async def healthy() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await until(healthy, within=30)
        listed = (await http.get("/api/prices")).json()
        assert listed["valuation_currency"] == "GBP"
        by_currency = {p["currency"]: p for p in listed["prices"]}
        cryptos = {c.code for c in CURRENCIES.values() if c.kind == "crypto"}
        assert set(by_currency) == cryptos | {"GBP"}
        assert by_currency["GBP"]["price"] == "1"
        assert all(Decimal(p["price"]) > 0 for p in listed["prices"])
        assert by_currency["BTC"]["source"] == "builtin"
