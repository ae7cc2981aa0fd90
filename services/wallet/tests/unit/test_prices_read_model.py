"""The prices read model: latest quote per currency, late and unreadable messages change nothing."""

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from shared.prices import FUTURE_TOLERANCE
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


def test_a_quote_stamped_with_another_offset_is_kept_in_utc() -> None:
    """The pages print it with "UTC" after it: 10:00-05:00 showed as 10:00 UTC."""
    book = PriceBook(clock=lambda: T + timedelta(hours=1))
    eastern = T.astimezone(timezone(timedelta(hours=-5)))
    assert apply_price_message(book, message(as_of=eastern.isoformat()))
    as_of = book.snapshot().quotes["BTC"].as_of
    assert (as_of, as_of.utcoffset()) == (T, timedelta(0))


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
        message(price="1" * 61),  # more digits than any answer could write back: it was a 500
        message(price="0." + "1" * 35),
        message(currency="DOGE"),
        message(as_of="2026-11-30T21:00:00"),  # no offset
        message(valuation_currency="EUR"),
        json.dumps({"currency": "BTC", "price": "1"}).encode(),
        None,  # a tombstone: it raised inside the subscriber
        message(as_of="0001-01-01T00:00:00+14:00"),  # before year 1 in UTC
    ],
)
def test_unreadable_or_foreign_messages_change_nothing(raw: bytes | None) -> None:
    book = PriceBook()
    assert not apply_price_message(book, raw)
    assert book.snapshot().quotes == {}


def test_a_quote_stamped_ahead_of_the_wallets_clock_is_refused_logged_and_holds_nothing_back() -> (
    None
):
    # A publisher whose clock ran an hour ahead: kept, its price would have valued every holding
    # for an hour, dated from the future, and every correct price before then would be ignored.
    book = PriceBook(clock=lambda: T)
    assert apply_price_message(book, message(price="52000"))
    ahead = T + timedelta(hours=1)
    with capture_logs() as logs:
        assert not apply_price_message(
            book, message(price="99000", as_of=ahead.isoformat(), source="coingecko")
        )
    assert [(e["log_level"], e["event"], e["currency"], e["as_of"], e["source"]) for e in logs] == [
        ("warning", "prices.future_stamped", "BTC", ahead.isoformat(), "coingecko")
    ]
    assert book.snapshot().quotes["BTC"].price == Decimal("52000")
    later = (T + timedelta(seconds=1)).isoformat()
    assert apply_price_message(book, message(price="52100", as_of=later))
    assert book.snapshot().quotes["BTC"].price == Decimal("52100")
    assert not apply_price_message(book, message(currency="ETH", as_of=ahead.isoformat()))
    assert "ETH" not in book.snapshot().quotes


def test_the_tolerance_is_small_and_judged_by_the_wallets_clock_when_the_quote_arrives() -> None:
    assert timedelta(0) < FUTURE_TOLERANCE <= timedelta(seconds=5)
    now = [T]
    book = PriceBook(clock=lambda: now[0])
    assert apply_price_message(book, message(as_of=(T + FUTURE_TOLERANCE).isoformat()))
    beyond = (T + FUTURE_TOLERANCE + timedelta(milliseconds=1)).isoformat()
    assert not apply_price_message(book, message(price="52013", as_of=beyond))
    now[0] = T + timedelta(seconds=1)
    assert apply_price_message(book, message(price="52013", as_of=beyond))


def test_a_future_stamped_quote_read_back_from_the_topic_after_a_restart_holds_nothing_back() -> (
    None
):
    # The topic still holds a quote from the future, written before the rule: a wallet started
    # now reads the topic's last messages again, refuses it and takes the correct quotes after it.
    written = [
        message(price="99000", as_of=(T + timedelta(hours=1)).isoformat()),
        message(price="52000", as_of=T.isoformat()),
        message(price="52100", as_of=(T + timedelta(seconds=2)).isoformat()),
    ]
    restarted = PriceBook(clock=lambda: T + timedelta(seconds=3))
    assert [apply_price_message(restarted, raw) for raw in written] == [False, True, True]
    assert restarted.snapshot().quotes["BTC"].price == Decimal("52100")


def test_a_price_of_decimal128s_34_significant_digits_is_kept() -> None:
    book = PriceBook()
    assert apply_price_message(book, message(price="1234567890.123456789012345678901234000"))
    assert book.snapshot().quotes["BTC"].price == Decimal("1234567890.123456789012345678901234")
