"""CoinGecko and Binance answers, from recorded fixtures (no network): numbers read as Decimal,
converted to GBP, and the requests the adapters make."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from trading.prices.adapters.market_data import (
    BinancePriceSource,
    CoinGeckoPriceSource,
    MarketDataError,
    parse_binance,
    parse_coingecko,
    read_json,
)
from trading.prices.domain import Price

FIXTURES = Path(__file__).parent.parent / "fixtures"
NOW = datetime(2026, 11, 30, 12, 5, tzinfo=UTC)


def _clock() -> datetime:
    return NOW


def _serving(fixture: str, seen: list[httpx.Request]) -> httpx.AsyncClient:
    body = (FIXTURES / fixture).read_bytes()

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return httpx.AsyncClient(base_url="https://api.example", transport=httpx.MockTransport(answer))


def test_json_floats_are_read_as_the_decimal_they_spell() -> None:
    document = read_json(b'{"gbp": 0.1, "n": 3, "tiny": 1e-7}')
    assert document == {"gbp": Decimal("0.1"), "n": Decimal(3), "tiny": Decimal("1E-7")}
    assert str(document["gbp"]) == "0.1"  # a float would be 0.1000000000000000055511151231257827


async def test_coingecko_prices_in_gbp_from_the_fixture() -> None:
    seen: list[httpx.Request] = []
    async with _serving("coingecko_simple_price.json", seen) as http:
        prices = {p.currency: p for p in await CoinGeckoPriceSource(http, _clock).fetch()}
    [request] = seen
    assert request.url.path == "/api/v3/simple/price"
    assert request.url.params["vs_currencies"] == "gbp"
    assert set(request.url.params["ids"].split(",")) >= {"bitcoin", "ethereum", "tron"}
    assert prices["BTC"].price == Decimal("52012.34")
    assert prices["BTC"].as_of == datetime.fromtimestamp(1764504000, UTC)
    assert prices["TRX"].price == Decimal("0.095123457")  # 8 significant digits
    assert prices["USDT"].price == Decimal("0.79012346")
    assert prices["SOL"].price == Decimal("110.00000")  # 1.1e2, no last_updated_at: fetch time
    assert prices["SOL"].as_of == NOW
    assert {p.source for p in prices.values()} == {"coingecko"}


async def test_binance_usdt_pairs_become_gbp_through_gbpusdt() -> None:
    seen: list[httpx.Request] = []
    async with _serving("binance_ticker_price.json", seen) as http:
        prices = {p.currency: p for p in await BinancePriceSource(http, _clock).fetch()}
    [request] = seen
    assert request.url.path == "/api/v3/ticker/price"
    assert "GBPUSDT" in json.loads(request.url.params["symbols"])
    # 65800.01 / 1.265 = 52015.8181818… → 8 significant digits.
    assert prices["BTC"].price == Decimal("52015.818")
    assert prices["USDT"].price == Decimal("0.79051383")  # 1 / 1.265
    assert prices["ETH"].price == Decimal("2799.3676")
    assert set(prices) == {"BTC", "ETH", "LTC", "SOL", "TRX", "USDC", "USDT"}
    assert all(p.as_of == NOW and p.source == "binance" for p in prices.values())


@pytest.mark.parametrize(
    ("parse", "document", "message"),
    [
        (parse_binance, [{"symbol": "BTCUSDT", "price": "1"}], "GBPUSDT missing"),
        (parse_binance, [{"symbol": "GBPUSDT", "price": "0"}], "not a positive price"),
        (parse_binance, {"symbol": "GBPUSDT"}, "expected a list"),
        (parse_coingecko, [], "expected an object"),
        (parse_coingecko, {"bitcoin": {"gbp": "NaN"}}, "not a positive price"),
        (parse_coingecko, {"bitcoin": {"gbp": "abc"}}, "not a number"),
    ],
)
def test_unusable_answers_are_refused(
    parse: Callable[[object, datetime], list[Price]], document: object, message: str
) -> None:
    with pytest.raises(MarketDataError, match=message):
        parse(document, NOW)


def test_a_coin_missing_from_the_answer_is_skipped_not_zero() -> None:
    prices = parse_coingecko({"bitcoin": {"gbp": Decimal("52000")}}, NOW)
    assert [(p.currency, p.price) for p in prices] == [("BTC", Decimal("52000.000"))]


def test_a_coingecko_stamp_ahead_of_the_fetch_is_kept_as_given_for_the_feed_to_refuse() -> None:
    # CoinGecko's clock an hour ahead for bitcoin: its stamp was cut to the fetch time, so a
    # price whose real age could not be known was published as fresh on every poll. Kept as
    # given, the feed drops it (test_prices: the feed drops a fetched price stamped ahead).
    ahead = NOW + timedelta(hours=1)
    document = {
        "bitcoin": {"gbp": Decimal("99000"), "last_updated_at": Decimal(int(ahead.timestamp()))},
        "ethereum": {"gbp": Decimal("2800"), "last_updated_at": Decimal(int(NOW.timestamp()))},
    }
    parsed = {p.currency: p.as_of for p in parse_coingecko(document, NOW)}
    assert parsed == {"BTC": ahead, "ETH": NOW}
