"""A price stamped ahead of the reader's clock on market.prices, e.g. written by a publisher
whose clock ran ahead before the rule existed, is refused when a (re)started process reads the
topic back: it neither stands as the latest price nor holds back the correct ones after it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from shared.messaging.topics import Topics
from shared.recent_messages import RecentMessagesReader
from trading.messaging import EventPublisher
from trading.prices.adapters.kafka import PriceBookUpdater, encode_price
from trading.prices.domain import Price, PriceBook
from trading.testing import FakeClock


async def _until_price(book: PriceBook, currency: str, price: Decimal) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (latest := book.latest(currency)) is None or latest.price != price:
        assert loop.time() - started < 10, f"{currency} is {latest}, not {price}"
        await asyncio.sleep(0.02)


async def test_a_future_stamped_price_on_the_topic_holds_nothing_back_after_a_restart(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> None:
    clock = FakeClock()
    now = clock()
    publisher = EventPublisher(kafka_bootstrap_servers)
    await publisher.start()
    try:
        for price in (
            Price("BTC", Decimal("99000"), now + timedelta(hours=1), "builtin"),  # clock ahead
            Price("BTC", Decimal("52000"), now, "builtin"),
        ):
            await publisher.publish(kafka_topics.prices, price.currency, encode_price(price))

        # The process starting now reads those back.
        book = PriceBook(max_age=timedelta(seconds=60))
        reader = RecentMessagesReader(
            kafka_bootstrap_servers, kafka_topics.prices, PriceBookUpdater(book, clock)
        )
        await reader.start()
        try:
            # Same key, same partition: read in order, the one from the future first.
            await _until_price(book, "BTC", Decimal("52000"))

            clock.advance(2)
            newer = Price("BTC", Decimal("52100"), clock(), "builtin")
            await publisher.publish(kafka_topics.prices, "BTC", encode_price(newer))
            await _until_price(book, "BTC", Decimal("52100"))
            assert book.current("BTC", clock()) == newer
        finally:
            await reader.stop()
    finally:
        await publisher.stop()
