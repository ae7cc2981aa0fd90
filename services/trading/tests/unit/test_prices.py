"""The price book (latest wins, stale never quoted, GBP is 1), the built-in walk, the
market.prices codec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.money import CURRENCIES
from trading.prices.adapters.kafka import PriceMessageError, decode_price, encode_price
from trading.prices.application import PriceFeed
from trading.prices.domain import (
    STARTING_PRICES,
    Price,
    PriceBook,
    PriceUnavailable,
    RandomWalk,
    round_price,
)
from trading.testing import FakeClock

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_the_latest_price_wins_and_an_older_message_never_replaces_it() -> None:
    book = PriceBook(max_age=timedelta(seconds=60))
    assert book.update(Price("BTC", Decimal("52000"), NOW, "builtin"))
    assert not book.update(Price("BTC", Decimal("1"), NOW - timedelta(seconds=1), "builtin"))
    assert book.update(Price("BTC", Decimal("50000"), NOW + timedelta(seconds=1), "pinned"))
    assert book.current("BTC", NOW + timedelta(seconds=1)).price == Decimal("50000")


def test_a_stale_or_missing_price_is_unavailable_and_not_listed() -> None:
    book = PriceBook(max_age=timedelta(seconds=60))
    book.update(Price("BTC", Decimal("52000"), NOW, "builtin"))
    book.update(Price("ETH", Decimal("2800"), NOW - timedelta(seconds=61), "builtin"))
    with pytest.raises(PriceUnavailable) as stale:
        book.current("ETH", NOW)
    assert stale.value.code == "price_unavailable"
    with pytest.raises(PriceUnavailable):
        book.current("SOL", NOW)
    assert book.current("BTC", NOW + timedelta(seconds=60)).price == Decimal("52000")
    listed = book.current_prices(NOW)
    assert [(p.currency, p.price) for p in listed] == [
        ("GBP", Decimal(1)),
        ("BTC", Decimal("52000")),
    ]


def test_the_walk_prices_every_crypto_currency_and_repeats_with_its_seed() -> None:
    cryptos = {c.code for c in CURRENCIES.values() if c.kind == "crypto"}
    assert set(STARTING_PRICES) == cryptos
    first, second = RandomWalk(7), RandomWalk(7)
    runs = [[first.step() for _ in range(50)], [second.step() for _ in range(50)]]
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]  # it moves
    assert RandomWalk(8).step() != runs[0][0]
    for step in runs[0]:
        for code, value in step.items():
            # Mean-reverting with small steps: within 10% of where it started over 50 ticks.
            assert abs(value / STARTING_PRICES[code] - 1) < Decimal("0.1"), (code, value)


def test_prices_keep_eight_significant_digits_and_at_least_two_decimals() -> None:
    assert round_price(Decimal("52012.3456789")) == Decimal("52012.346")
    assert round_price(Decimal("0.0951234567")) == Decimal("0.095123457")
    assert round_price(Decimal("3")) == Decimal("3.00")


def test_a_price_message_round_trips_and_foreign_ones_are_refused() -> None:
    price = Price("BTC", Decimal("52012.34"), NOW, "builtin")
    raw = encode_price(price)
    assert raw == (
        b'{"currency":"BTC","price":"52012.34","valuation_currency":"GBP",'
        b'"as_of":"2026-11-30T12:00:00+00:00","source":"builtin"}'
    )
    assert decode_price(raw) == price
    for bad in (
        b'{"currency":"BTC","price":"1","valuation_currency":"USD","as_of":"2026-11-30T12:00:00+00:00","source":"x"}',
        b'{"currency":"XYZ","price":"1","valuation_currency":"GBP","as_of":"2026-11-30T12:00:00+00:00","source":"x"}',
        b'{"currency":"BTC","price":1.5,"valuation_currency":"GBP","as_of":"2026-11-30T12:00:00+00:00","source":"x"}',
        b'{"currency":"BTC","price":"-1","valuation_currency":"GBP","as_of":"2026-11-30T12:00:00+00:00","source":"x"}',
        b'{"currency":"BTC","price":"1","valuation_currency":"GBP","as_of":"2026-11-30T12:00:00","source":"x"}',
        b"not json",
    ):
        with pytest.raises(PriceMessageError, match="not a price message"):
            decode_price(bad)


class _Pins:
    def __init__(self) -> None:
        self.pins: dict[str, Decimal] = {}

    async def all(self) -> dict[str, Decimal]:
        return dict(self.pins)

    async def pin(self, currency: str, price: Decimal, by: str, at: datetime) -> None:
        self.pins[currency] = price

    async def unpin(self, currency: str) -> bool:
        return self.pins.pop(currency, None) is not None


class _Published:
    def __init__(self) -> None:
        self.prices: list[Price] = []

    async def publish(self, price: Price) -> None:
        self.prices.append(price)


class _Source:
    name = "test"

    def __init__(self) -> None:
        self.fail = False
        self.value = Decimal("52000")

    async def fetch(self) -> list[Price]:
        if self.fail:
            raise ConnectionError("market data away")
        return [Price("BTC", self.value, NOW, "test"), Price("ETH", Decimal("2800"), NOW, "test")]


async def test_the_feed_publishes_pins_instead_of_the_source_and_survives_a_failing_source() -> (
    None
):
    clock = FakeClock(NOW)
    source, published, pins = _Source(), _Published(), _Pins()
    book = PriceBook(max_age=timedelta(seconds=60))
    feed = PriceFeed(source, published, pins, book, clock)

    assert [(p.currency, p.price) for p in await feed.tick()] == [
        ("BTC", Decimal("52000")),
        ("ETH", Decimal("2800")),
    ]
    clock.advance(1)
    pinned = await feed.pin("BTC", Decimal("50000"), by="ops")
    assert (pinned.source, pinned.as_of) == ("pinned", clock())
    assert book.current("BTC", clock()).price == Decimal("50000")  # this process at once

    source.fail = True
    clock.advance(1)
    assert [(p.currency, p.price, p.source) for p in await feed.tick()] == [
        ("BTC", Decimal("50000"), "pinned")
    ]
    source.fail, source.value = False, Decimal("51000")
    clock.advance(1)
    ticked = {p.currency: p for p in await feed.tick()}
    assert ticked["BTC"].source == "pinned"  # the source's 51000 is not published while pinned

    clock.advance(1)
    restored = await feed.unpin("BTC")
    assert restored is not None
    assert (restored.price, restored.source, restored.as_of) == (Decimal("51000"), "test", clock())
    assert book.current("BTC", clock()).price == Decimal("51000")
    assert published.prices[-1] == restored
