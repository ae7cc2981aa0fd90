"""The price book (latest wins, stale never quoted, GBP is 1), the built-in walk, the
market.prices codec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from shared.money import CURRENCIES
from shared.prices import FUTURE_TOLERANCE
from trading.prices.adapters.kafka import PriceMessageError, decode_price, encode_price
from trading.prices.application import PriceFeed, PriceSource
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
    assert book.update(Price("BTC", Decimal("52000"), NOW, "builtin"), NOW)
    assert not book.update(Price("BTC", Decimal("1"), NOW - timedelta(seconds=1), "builtin"), NOW)
    assert book.update(Price("BTC", Decimal("50000"), NOW + timedelta(seconds=1), "pinned"), NOW)
    assert book.current("BTC", NOW + timedelta(seconds=1)).price == Decimal("50000")


def test_a_stale_or_missing_price_is_unavailable_and_not_listed() -> None:
    book = PriceBook(max_age=timedelta(seconds=60))
    book.update(Price("BTC", Decimal("52000"), NOW, "builtin"), NOW)
    book.update(Price("ETH", Decimal("2800"), NOW - timedelta(seconds=61), "builtin"), NOW)
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


def test_a_price_stamped_ahead_of_the_clock_is_refused_logged_and_holds_nothing_back() -> None:
    # A publisher whose clock ran an hour ahead: kept, it would have stayed "fresh" for an hour
    # and every correct price stamped before it would have been ignored until then.
    book = PriceBook(max_age=timedelta(seconds=60))
    assert book.update(Price("BTC", Decimal("52000"), NOW, "builtin"), NOW)
    ahead = NOW + timedelta(hours=1)
    with capture_logs() as logs:
        assert not book.update(Price("BTC", Decimal("99000"), ahead, "coingecko"), NOW)
    assert [(e["log_level"], e["event"], e["currency"], e["as_of"], e["source"]) for e in logs] == [
        ("warning", "prices.future_stamped", "BTC", ahead.isoformat(), "coingecko")
    ]
    assert book.current("BTC", NOW).price == Decimal("52000")
    later = NOW + timedelta(seconds=2)
    assert book.update(Price("BTC", Decimal("52100"), later, "builtin"), later)
    assert book.current("BTC", later).price == Decimal("52100")
    # Never held: a currency with only a price from the future has no price at all.
    assert not book.update(Price("ETH", Decimal("2800"), ahead, "builtin"), NOW)
    assert book.latest("ETH") is None


def test_a_price_within_the_tolerance_ahead_is_taken_and_the_tolerance_is_small() -> None:
    assert timedelta(0) < FUTURE_TOLERANCE <= timedelta(seconds=5)
    book = PriceBook(max_age=timedelta(seconds=60))
    edge = NOW + FUTURE_TOLERANCE
    assert book.update(Price("BTC", Decimal("52000"), edge, "builtin"), NOW)
    beyond = edge + timedelta(milliseconds=1)
    assert not book.update(Price("BTC", Decimal("52001"), beyond, "builtin"), NOW)
    # Judged by the receiving clock: the same stamp is fine once this clock has moved on.
    assert book.update(
        Price("BTC", Decimal("52001"), beyond, "builtin"), NOW + timedelta(seconds=1)
    )


def test_a_price_is_never_fresh_longer_than_the_max_age_after_it_was_taken() -> None:
    book = PriceBook(max_age=timedelta(seconds=60))
    book.update(Price("BTC", Decimal("52000"), NOW + timedelta(seconds=4), "builtin"), NOW)
    assert book.current("BTC", NOW + timedelta(seconds=60)).price == Decimal("52000")
    gone = NOW + timedelta(seconds=60, milliseconds=1)
    with pytest.raises(PriceUnavailable):
        book.current("BTC", gone)
    assert [p.currency for p in book.current_prices(gone)] == ["GBP"]
    # A redelivery of that same message later does not make it fresh again.
    book.update(Price("BTC", Decimal("52000"), NOW + timedelta(seconds=4), "builtin"), gone)
    with pytest.raises(PriceUnavailable):
        book.current("BTC", gone)


def test_a_source_whose_clock_steps_back_is_held_back_no_longer_than_the_tolerance() -> None:
    # Its clock ran 4 s ahead (within the tolerance), then was set right: its next prices are
    # stamped before the one held, and are taken again once its clock passes that stamp.
    book = PriceBook(max_age=timedelta(seconds=60))
    held = NOW + timedelta(seconds=4)
    assert book.update(Price("BTC", Decimal("52000"), held, "builtin"), NOW)
    t = NOW + timedelta(seconds=2)
    assert not book.update(Price("BTC", Decimal("52100"), t, "builtin"), t)
    t = held
    assert book.update(Price("BTC", Decimal("52200"), t, "builtin"), t)
    assert book.current("BTC", t).price == Decimal("52200")


def test_a_clock_stepped_back_freezes_no_price() -> None:
    """This process's clock stepped back 10 minutes: the price it held read as fresh for the
    whole step (its age negative) and refused every newer price, each stamped before it, so
    swaps were quoted at a rate the market had left."""
    book = PriceBook(max_age=timedelta(seconds=60))
    assert book.update(Price("BTC", Decimal("52000"), NOW, "builtin"), NOW)
    back = NOW - timedelta(minutes=10)
    with pytest.raises(PriceUnavailable):
        book.current("BTC", back)
    assert [p.currency for p in book.current_prices(back)] == ["GBP"]
    assert book.update(Price("BTC", Decimal("43000"), back, "builtin"), back)
    assert book.current("BTC", back).price == Decimal("43000")
    # Within the tolerance (hosts' clocks a little apart) nothing changes: the newer one holds.
    near = NOW - FUTURE_TOLERANCE
    book = PriceBook(max_age=timedelta(seconds=60))
    book.update(Price("BTC", Decimal("52000"), NOW, "builtin"), NOW)
    assert book.current("BTC", near).price == Decimal("52000")
    assert not book.update(Price("BTC", Decimal("51000"), near, "builtin"), near)


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


def _feed(source: PriceSource) -> tuple[PriceFeed, FakeClock, _Published, PriceBook]:
    clock, published = FakeClock(NOW), _Published()
    book = PriceBook(max_age=timedelta(seconds=60))
    return PriceFeed(source, published, _Pins(), book, clock), clock, published, book


async def test_the_feed_publishes_pins_instead_of_the_source_and_survives_a_failing_source() -> (
    None
):
    source = _Source()
    feed, clock, published, book = _feed(source)

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


class _AheadSource:
    """A source whose clock runs an hour ahead for BTC only."""

    name = "test"

    async def fetch(self) -> list[Price]:
        return [
            Price("BTC", Decimal("99000"), NOW + timedelta(hours=1), "test"),
            Price("ETH", Decimal("2800"), NOW, "test"),
        ]


async def test_the_feed_drops_a_fetched_price_stamped_ahead_and_never_publishes_it() -> None:
    feed, _, published, book = _feed(_AheadSource())
    with capture_logs() as logs:
        ticked = await feed.tick()
    assert [(p.currency, p.price) for p in ticked] == [("ETH", Decimal("2800"))]
    assert published.prices == ticked
    assert book.latest("BTC") is None
    assert [(e["event"], e["currency"], e["source"]) for e in logs] == [
        ("prices.future_stamped", "BTC", "test")
    ]
    # Nor is it what an unpin restores.
    assert await feed.unpin("BTC") is None


async def test_an_unpin_never_restamps_a_price_the_source_gave_longer_ago_than_the_max_age() -> (
    None
):
    # The source went away after its last price: unpinned ten minutes later, that price was
    # published stamped "now" and quoted as fresh for another minute.
    source = _Source()
    feed, clock, published, _ = _feed(source)
    await feed.tick()
    await feed.pin("BTC", Decimal("50000"), by="ops")
    source.fail = True
    clock.advance(600)
    await feed.tick()
    assert await feed.unpin("BTC") is None
    assert published.prices[-1].source == "pinned"
    assert not [p for p in published.prices if p.source == "test" and p.as_of != NOW]
