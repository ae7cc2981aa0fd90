"""Real market data: CoinGecko `/api/v3/simple/price` and Binance `/api/v3/ticker/price`.

Both answer JSON whose numbers are read as Decimal (never float). Every price becomes GBP:
CoinGecko quotes GBP directly; Binance quotes USDT pairs, converted through GBPUSDT.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, DivisionByZero, InvalidOperation, localcontext
from typing import Any, Final

import httpx

from trading.prices.domain import STARTING_PRICES, Price, round_price

COINGECKO_IDS: Final[Mapping[str, str]] = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "USDT": "tether",
    "USDC": "usd-coin",
    "LTC": "litecoin",
    "TRX": "tron",
    "SOL": "solana",
}
BINANCE_QUOTE: Final = "USDT"
BINANCE_GBP_SYMBOL: Final = "GBPUSDT"  # GBP priced in USDT: 1 USDT = 1 / this GBP


class MarketDataError(Exception):
    """The source answered something that is not a usable price list."""


def read_json(text: str | bytes) -> Any:
    """JSON with every number read exactly as Decimal (an API's 0.1 stays 0.1)."""
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError as error:
        raise MarketDataError(f"unreadable JSON: {error}") from None


def _positive(raw: object, what: str) -> Decimal:
    try:
        value = raw if isinstance(raw, Decimal) else Decimal(str(raw))
    except InvalidOperation:
        raise MarketDataError(f"{what}: not a number: {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise MarketDataError(f"{what}: not a positive price: {raw!r}")
    return value


def parse_coingecko(document: object, fetched_at: datetime) -> list[Price]:
    """`{"bitcoin": {"gbp": 52012.34, "last_updated_at": 1764540000}, …}` → GBP prices.

    A coin missing from the answer is skipped (its last price ages until it is stale). A coin's
    `last_updated_at` is its as_of as given, also one ahead of `fetched_at`: the feed refuses a
    price stamped ahead of its clock rather than restamping it with the fetch time.
    """
    if not isinstance(document, dict):
        raise MarketDataError("expected an object of coin id → prices")
    prices = []
    for code, coin_id in COINGECKO_IDS.items():
        entry = document.get(coin_id)
        if not isinstance(entry, dict) or "gbp" not in entry:
            continue
        as_of = fetched_at
        updated = entry.get("last_updated_at")
        if isinstance(updated, Decimal) and updated.is_finite():
            as_of = datetime.fromtimestamp(int(updated), UTC)
        value = round_price(_positive(entry["gbp"], f"coingecko {coin_id}"))
        prices.append(Price(code, value, as_of, "coingecko"))
    return prices


def parse_binance(document: object, fetched_at: datetime) -> list[Price]:
    """`[{"symbol": "BTCUSDT", "price": "65000.01000000"}, …, {"symbol": "GBPUSDT", …}]`."""
    if not isinstance(document, list):
        raise MarketDataError("expected a list of tickers")
    by_symbol: dict[str, Decimal] = {}
    for ticker in document:
        if isinstance(ticker, dict) and isinstance(ticker.get("symbol"), str):
            by_symbol[ticker["symbol"]] = _positive(ticker.get("price"), ticker["symbol"])
    gbp_in_usdt = by_symbol.get(BINANCE_GBP_SYMBOL)
    if gbp_in_usdt is None:
        raise MarketDataError(f"{BINANCE_GBP_SYMBOL} missing: cannot convert to GBP")
    prices = []
    with localcontext() as context:
        context.prec = 40
        context.traps[DivisionByZero] = True
        for code in sorted(STARTING_PRICES):
            in_usdt = Decimal(1) if code == BINANCE_QUOTE else by_symbol.get(code + BINANCE_QUOTE)
            if in_usdt is None:
                continue
            prices.append(Price(code, round_price(in_usdt / gbp_in_usdt), fetched_at, "binance"))
    return prices


def binance_symbols() -> list[str]:
    return [c + BINANCE_QUOTE for c in sorted(STARTING_PRICES) if c != BINANCE_QUOTE] + [
        BINANCE_GBP_SYMBOL
    ]


class CoinGeckoPriceSource:
    name = "coingecko"

    def __init__(self, http: httpx.AsyncClient, clock: Callable[[], datetime]) -> None:
        self._http = http
        self._clock = clock

    async def fetch(self) -> Sequence[Price]:
        response = await self._http.get(
            "/api/v3/simple/price",
            params={
                "ids": ",".join(COINGECKO_IDS.values()),
                "vs_currencies": "gbp",
                "include_last_updated_at": "true",
            },
        )
        response.raise_for_status()
        return parse_coingecko(read_json(response.content), self._clock())


class BinancePriceSource:
    name = "binance"

    def __init__(self, http: httpx.AsyncClient, clock: Callable[[], datetime]) -> None:
        self._http = http
        self._clock = clock

    async def fetch(self) -> Sequence[Price]:
        response = await self._http.get(
            "/api/v3/ticker/price",
            params={"symbols": json.dumps(binance_symbols(), separators=(",", ":"))},
        )
        response.raise_for_status()
        return parse_binance(read_json(response.content), self._clock())
