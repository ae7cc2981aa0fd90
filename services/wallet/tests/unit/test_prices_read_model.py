"""The prices read model: latest quote per currency, late and unreadable messages change nothing."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from wallet.application.prices import PriceBook
from wallet.entrypoints.prices_consumer import apply_price_message

T = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


def message(currency: str = "BTC", price: object = "52012.34", **fields: object) -> bytes:
    document = {
        "currency": currency,
        "price": price,
        "valuation_currency": "GBP",
        "as_of": T.isoformat(),
        "source": "builtin",
    } | fields
    return json.dumps(document).encode()


def test_the_latest_quote_wins_and_a_late_one_is_ignored() -> None:
    book = PriceBook()
    assert apply_price_message(book, message(price="50000"))
    later = (T + timedelta(seconds=3)).isoformat()
    assert apply_price_message(book, message(price="50100.5", as_of=later))
    assert not apply_price_message(book, message(price="1"))  # older than the one held
    quote = book.snapshot().quotes["BTC"]
    assert (quote.price, quote.as_of, quote.source) == (
        Decimal("50100.5"),
        T + timedelta(seconds=3),
        "builtin",
    )


def test_a_snapshot_does_not_change_under_its_reader() -> None:
    book = PriceBook()
    apply_price_message(book, message(price="50000"))
    snapshot = book.snapshot()
    apply_price_message(book, message(currency="ETH", price="2000"))
    assert set(snapshot.quotes) == {"BTC"}
    assert set(book.snapshot().quotes) == {"BTC", "ETH"}


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        message(price=52012.34),  # a JSON number: prices are decimal strings
        message(price="0"),
        message(price="-1"),
        message(price="NaN"),
        message(currency="DOGE"),
        message(as_of="2026-11-30T21:00:00"),  # no offset
        message(valuation_currency="EUR"),
        json.dumps({"currency": "BTC", "price": "1"}).encode(),
    ],
)
def test_unreadable_or_foreign_messages_change_nothing(raw: bytes) -> None:
    book = PriceBook()
    assert not apply_price_message(book, raw)
    assert book.snapshot().quotes == {}
