"""The prices read model fed from `market.prices` on the embedded broker, and the portfolio the
wallet serves from it (the trading service publishes these messages; here the test does)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from aiokafka import AIOKafkaProducer

from shared.http import make_token
from shared.messaging.topics import Topics
from shared.wallet_client import WalletClient
from wallet.bootstrap import WalletRuntime, build_http_app, build_runtime

from .conftest import started

NOW = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


def price(currency: str, value: str, as_of: datetime, valuation: str = "GBP") -> bytes:
    return json.dumps(
        {
            "currency": currency,
            "price": value,
            "valuation_currency": valuation,
            "as_of": as_of.isoformat(),
            "source": "builtin",
        }
    ).encode()


async def test_latest_prices_value_the_portfolio(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    wallet_runtime: WalletRuntime,
    wallet_client: WalletClient,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    try:
        for key, value in [
            (b"BTC", price("BTC", "50000", NOW)),
            (b"BTC", price("BTC", "52012.34", NOW + timedelta(seconds=5))),
            (b"BTC", price("BTC", "1", NOW - timedelta(seconds=5))),  # late: older than held
            (b"ETH", b"{not json"),
            (b"ETH", price("ETH", "-3", NOW)),
            (b"ETH", price("ETH", "2000", NOW, valuation="EUR")),
            (b"ETH", price("ETH", "2012.5", NOW)),
        ]:
            await producer.send_and_wait(kafka_topics.prices, value, key=key)
    finally:
        await producer.stop()

    async with asyncio.timeout(30):
        while set(wallet_runtime.prices.snapshot().quotes) != {"BTC", "ETH"}:
            await asyncio.sleep(0.05)
    quotes = wallet_runtime.prices.snapshot().quotes
    assert (quotes["BTC"].price, quotes["BTC"].as_of) == (
        Decimal("52012.34"),
        NOW + timedelta(seconds=5),
    )
    assert quotes["ETH"].price == Decimal("2012.5")

    result = await wallet_client.credit(
        user_id="pia",
        currency="BTC",
        amount="0.5",
        transaction_type="deposit_nowpayments",
        reference_id="pia-1",
    )
    assert result is not None
    assert result.status == "applied"
    token = make_token(wallet_runtime.settings.auth_jwt_secret, "pia")
    transport = httpx.ASGITransport(app=build_http_app(wallet_runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as http:
        response = await http.get(
            "/api/wallets/portfolio/pia", headers={"Authorization": f"Bearer {token}"}
        )
    body = response.json()
    assert (response.status_code, body["total_value"], body["prices_as_of"]) == (
        200,
        "26006.17",
        "2026-11-30T21:00:05Z",
    )


async def _until_quote(runtime: WalletRuntime, currency: str, value: Decimal) -> None:
    async with asyncio.timeout(30):
        while (q := runtime.prices.snapshot().quotes.get(currency)) is None or q.price != value:
            await asyncio.sleep(0.05)


async def test_a_future_stamped_price_neither_stands_nor_holds_back_also_after_a_restart(
    kafka_bootstrap_servers: str, kafka_topics: Topics, wallet_runtime: WalletRuntime
) -> None:
    # The wallet's own clock: a publisher an hour ahead of it, then the correct prices.
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    try:
        for value in (
            price("SOL", "999", now + timedelta(hours=1)),
            price("SOL", "110", now),
            price("SOL", "111", now + timedelta(seconds=1)),
        ):
            await producer.send_and_wait(kafka_topics.prices, value, key=b"SOL")
    finally:
        await producer.stop()
    await _until_quote(wallet_runtime, "SOL", Decimal("111"))

    # A wallet started now reads the topic's recent messages again: the one from the future is still
    # there, and is refused again.
    restarted = await started(build_runtime(wallet_runtime.settings))
    try:
        await _until_quote(restarted, "SOL", Decimal("111"))
        assert restarted.prices.snapshot().quotes["SOL"].as_of == now + timedelta(seconds=1)
    finally:
        await restarted.stop()


async def test_a_starting_wallet_reads_only_the_recent_prices_not_the_topics_history(
    kafka_bootstrap_servers: str, kafka_topics: Topics, wallet_runtime: WalletRuntime
) -> None:
    # The topic keeps days of quotes. A wallet that replayed them from the start valued every
    # portfolio at old prices until it caught up (minutes on a real feed): a starting wallet
    # reads PRICE_TOPIC_LOOKBACK messages per partition back from the end, no more.
    lookback = 5
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    try:
        # Beyond the lookback: stamped newest, so a reader that saw it would keep it.
        await producer.send_and_wait(kafka_topics.prices, price("LTC", "999", now), key=b"LTC")
        for n in range(lookback):
            stamped = now - timedelta(minutes=10) + timedelta(seconds=n)
            await producer.send_and_wait(
                kafka_topics.prices, price("LTC", f"{70 + n}", stamped), key=b"LTC"
            )
    finally:
        await producer.stop()
    await _until_quote(wallet_runtime, "LTC", Decimal("999"))  # the running one read them all

    settings = wallet_runtime.settings.model_copy(update={"price_topic_lookback": lookback})
    restarted = await started(build_runtime(settings))
    try:
        await _until_quote(restarted, "LTC", Decimal(f"{70 + lookback - 1}"))
        assert restarted.prices.snapshot().quotes["LTC"].as_of == stamped
    finally:
        await restarted.stop()
