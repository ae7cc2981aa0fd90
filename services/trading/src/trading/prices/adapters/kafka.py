"""market.prices messages (key = currency):

    {"currency": "BTC", "price": "52012.34", "valuation_currency": "GBP",
     "as_of": "2026-11-30T21:00:00.123000+00:00", "source": "builtin"}

`price` is a decimal string in GBP; `source` is builtin, coingecko, binance or pinned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import structlog

from shared.money import format_amount, get_currency, parse_decimal
from trading.messaging import EventPublisher
from trading.prices.domain import VALUATION_CURRENCY, Price, PriceBook

log = structlog.get_logger(__name__)


class PriceMessageError(ValueError):
    """A message on market.prices that is not a usable GBP price."""


def encode_price(price: Price) -> bytes:
    return json.dumps(
        {
            "currency": price.currency,
            "price": format_amount(price.price),
            "valuation_currency": VALUATION_CURRENCY,
            "as_of": price.as_of.isoformat(),
            "source": price.source,
        },
        separators=(",", ":"),
    ).encode()


def decode_price(raw: bytes) -> Price:
    """A price message, or ValueError (malformed, not GBP, unknown currency, naive as_of)."""
    try:
        document = json.loads(raw)
        if document.get("valuation_currency") != VALUATION_CURRENCY:
            raise ValueError(f"not a {VALUATION_CURRENCY} price")
        return Price(
            currency=get_currency(document["currency"]).code,
            price=parse_decimal(document["price"]),
            as_of=datetime.fromisoformat(document["as_of"]),
            source=str(document["source"]),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as error:  # MoneyError included
        raise PriceMessageError(f"not a price message: {error}") from None


class KafkaPricePublisher:
    def __init__(self, publisher: EventPublisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def publish(self, price: Price) -> None:
        await self._publisher.publish(self._topic, price.currency, encode_price(price))


class PriceBookUpdater:
    """Keeps a PriceBook at the latest price of each currency read from market.prices, each
    taken at `clock()` (this process's clock: a price stamped ahead of it is refused)."""

    def __init__(self, book: PriceBook, clock: Callable[[], datetime]) -> None:
        self._book = book
        self._clock = clock

    async def __call__(self, value: bytes, key: bytes | None) -> None:
        try:
            price = decode_price(value)
        except PriceMessageError as error:
            log.warning("prices.unreadable_message", error=str(error), value=value[:200])
            return
        self._book.update(price, self._clock())
