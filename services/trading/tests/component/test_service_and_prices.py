"""The composition root and the price feed over the real embedded Kafka and MongoDB: /healthz
waits for the broker, the consumers and the database; the built-in feed has prices at once; a
pin reaches another process's price book through market.prices within 2 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect
from structlog.testing import capture_logs

from shared.infra.net import free_port
from shared.messaging.topics import Topics
from shared.money import CURRENCIES
from shared.recent_messages import RecentMessagesReader
from trading.bootstrap import TradingService, build_service, create_trading_app
from trading.conversions.entrypoints import build_conversions_feature
from trading.feature import utc_now
from trading.prices.adapters.kafka import PriceBookUpdater
from trading.prices.adapters.mongo import MongoPins
from trading.prices.domain import PriceBook
from trading.prices.entrypoints import build_prices_feature
from trading.prices.settings import PriceSettings
from trading.settings import TradingSettings

CRYPTOS = {c.code for c in CURRENCIES.values() if c.kind == "crypto"}


def settings_for(
    bootstrap: str, topics: Topics, mongodb_url: str, database: str, secret: str, **more: Any
) -> TradingSettings:
    return TradingSettings(
        kafka_bootstrap_servers=bootstrap,
        kafka_topic_prefix=topics.prefix,
        mongodb_url=mongodb_url,
        trading_mongodb_database=database,
        auth_jwt_secret=secret,
        TRADING_RESULTS_CONSUMER_GROUP=f"trading-prices-{free_port()}",
        TRADING_RESULTS_SESSION_TIMEOUT_MS=3000,
        TRADING_RESULTS_HEARTBEAT_INTERVAL_MS=500,
        **more,
    )


class Running:
    def __init__(self, service: TradingService, http: httpx.AsyncClient) -> None:
        self.service = service
        self.http = http


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def running(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    serve_app: Callable[[Any, int], AbstractAsyncContextManager[str]],
    until: Callable[..., Awaitable[None]],
    jwt_secret: str,
) -> AsyncIterator[Running]:
    settings = settings_for(
        kafka_bootstrap_servers, kafka_topics, mongodb_url, mongo_database.name, jwt_secret
    )
    service = build_service(
        settings,
        features=[
            partial(build_prices_feature, settings=PriceSettings(price_feed_interval_seconds=0.5)),
            build_conversions_feature,
        ],
    )
    assert not await service.ready()  # nothing started yet
    async with (
        serve_app(create_trading_app(service), free_port()) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):

        async def healthy() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await until(healthy, within=30)
        yield Running(service, http)


async def test_a_fresh_service_has_a_gbp_price_for_every_crypto_at_once(running: Running) -> None:
    listed = (await running.http.get("/api/prices")).json()
    assert listed["valuation_currency"] == "GBP"
    by_currency = {p["currency"]: p for p in listed["prices"]}
    assert set(by_currency) == CRYPTOS | {"GBP"}
    assert by_currency["GBP"]["price"] == "1"
    assert all(Decimal(p["price"]) > 0 for p in listed["prices"])
    assert by_currency["BTC"]["source"] == "builtin"
    market = [p["as_of"] for p in listed["prices"] if p["currency"] != "GBP"]
    assert listed["as_of"] == max(market)  # not GBP's "now"


async def test_a_pin_reaches_another_process_within_two_seconds_and_unpin_restores_the_feed(
    running: Running, kafka_bootstrap_servers: str, kafka_topics: Topics, auth_headers: Any
) -> None:
    # Another process's view: its own book, fed only by the topic.
    elsewhere = PriceBook(max_age=timedelta(seconds=60))
    reader = RecentMessagesReader(
        kafka_bootstrap_servers, kafka_topics.prices, PriceBookUpdater(elsewhere, utc_now)
    )
    await reader.start()
    try:
        forbidden = await running.http.put(
            "/api/admin/prices", json={"currency": "BTC", "price": "1"}, headers=auth_headers("amy")
        )
        assert forbidden.status_code == 403
        pinned = await running.http.put(
            "/api/admin/prices",
            json={"currency": "btc", "price": "50000.00"},
            headers=auth_headers("ops", "admin"),
        )
        assert pinned.status_code == 200, pinned.text
        assert (pinned.json()["price"], pinned.json()["source"]) == ("50000", "pinned")
        loop = asyncio.get_running_loop()
        started = loop.time()
        while (latest := elsewhere.latest("BTC")) is None or latest.source != "pinned":
            assert loop.time() - started < 2.0, "the pin did not arrive within 2 s"
            await asyncio.sleep(0.02)
        assert latest.price == Decimal("50000")

        await asyncio.sleep(1.2)  # the feed keeps publishing the pin, not its walk
        listed = (await running.http.get("/api/prices")).json()
        btc = next(p for p in listed["prices"] if p["currency"] == "BTC")
        assert (btc["price"], btc["source"]) == ("50000", "pinned")

        unpinned = await running.http.delete(
            "/api/admin/prices/BTC", headers=auth_headers("ops", "admin")
        )
        assert unpinned.status_code == 200, unpinned.text
        assert unpinned.json()["price"]["source"] == "builtin"
        started = loop.time()
        while (latest := elsewhere.latest("BTC")) is None or latest.source != "builtin":
            assert loop.time() - started < 2.0, "the unpin did not arrive within 2 s"
            await asyncio.sleep(0.02)
    finally:
        await reader.stop()


async def test_the_valuation_currency_cannot_be_pinned(running: Running, auth_headers: Any) -> None:
    refused = await running.http.put(
        "/api/admin/prices",
        json={"currency": "GBP", "price": "2"},
        headers=auth_headers("ops", "admin"),
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "valuation_currency")
    negative = await running.http.put(
        "/api/admin/prices",
        json={"currency": "ETH", "price": "-5"},
        headers=auth_headers("ops", "admin"),
    )
    assert (negative.status_code, negative.json()["error"]["code"]) == (422, "amount_not_positive")


async def test_a_pin_the_feed_could_not_keep_as_given_is_refused(
    running: Running, auth_headers: Any
) -> None:
    # Too small or too large, a quote's rate against another price may not fit a stored decimal;
    # more digits than a price keeps would have been published unrounded. Both were pinned.
    for price, code in (
        ("1e-170", "price_out_of_range"),
        ("0.00000099", "price_out_of_range"),
        ("1000000000", "price_out_of_range"),
        ("50000.123456789", "price_too_precise"),
        ("1.0000000000000000000000000000000001", "price_too_precise"),
    ):
        refused = await running.http.put(
            "/api/admin/prices",
            json={"currency": "ETH", "price": price},
            headers=auth_headers("ops", "admin"),
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, code), price
    listed = (await running.http.get("/api/prices")).json()["prices"]
    assert next(p for p in listed if p["currency"] == "ETH")["source"] != "pinned"
    for price in ("0.000001", "999999990", "50000.12", "0.12345678"):
        kept = await running.http.put(
            "/api/admin/prices",
            json={"currency": "ETH", "price": price},
            headers=auth_headers("ops", "admin"),
        )
        assert kept.status_code == 200, (price, kept.text)


async def test_outside_staging_pin_and_unpin_do_not_exist(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    jwt_secret: str,
    auth_headers: Any,
) -> None:
    settings = settings_for(
        kafka_bootstrap_servers,
        kafka_topics,
        mongodb_url,
        mongo_database.name,
        jwt_secret,
        is_staging=False,
    )
    app = create_trading_app(build_service(settings))  # not started: routes only
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as http:
        admin = auth_headers("ops", "admin")
        put = await http.put(
            "/api/admin/prices", json={"currency": "BTC", "price": "1"}, headers=admin
        )
        delete = await http.delete("/api/admin/prices/BTC", headers=admin)
        listed = await http.get("/api/prices")
    assert (put.status_code, put.json()["error"]["code"]) == (404, "not_found")
    assert delete.status_code == 404
    assert listed.status_code == 200


async def test_a_failed_tick_is_logged_and_the_feed_goes_on(
    running: Running, monkeypatch: pytest.MonkeyPatch, until: Callable[..., Awaitable[None]]
) -> None:
    # A MongoDB blip while the feed reads its pins: before, the feed's task ended on it, /healthz
    # stayed 503 and every quote answered price_unavailable once the last price went stale.
    failures = 0
    read_pins = MongoPins.all

    async def blip(self: MongoPins) -> dict[str, Decimal]:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise AutoReconnect("primary stepped down")
        return await read_pins(self)

    book = running.service.context.prices
    with capture_logs() as logs:
        monkeypatch.setattr(MongoPins, "all", blip)

        async def failed() -> bool:
            return failures == 1

        await until(failed, within=5)
        failed_at = utc_now()

        async def published_after_the_failure() -> bool:
            latest = book.latest("BTC")
            return latest is not None and latest.as_of > failed_at

        await until(published_after_the_failure, within=5)
    assert [e["task"] for e in logs if e["event"] == "prices.feed_failed"] == ["price-feed"]
    assert await running.service.ready()
    assert (await running.http.get("/healthz")).status_code == 200


async def test_healthz_reports_a_stuck_results_consumer(running: Running) -> None:
    results = running.service.results
    # One result has been failing (the database away) for longer than allowed.
    results._failing_since = time.monotonic() - results._stuck_after - 1
    try:
        assert (await running.http.get("/healthz")).status_code == 503
    finally:
        results._failing_since = None
    assert (await running.http.get("/healthz")).status_code == 200
