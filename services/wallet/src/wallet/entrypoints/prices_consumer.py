"""The subscriber on `market.prices` that keeps the wallet's prices read model."""

from __future__ import annotations

import decimal
import json
from datetime import UTC
from typing import Any, Final

from faststream.kafka import KafkaBroker
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError, field_validator

from shared.logging import get_logger
from shared.messaging.commands import CurrencyCode, WireDecimal
from shared.messaging.topics import Topics
from shared.recent_messages import RecentMessagesReader
from wallet.application.prices import PriceBook, Quote

log = get_logger(__name__)

PRICE_SIGNIFICANT_DIGITS: Final = 34
# Exact for any WireDecimal (at most 64 characters).
_EXACT: Final = decimal.Context(prec=100)


class PriceMessage(BaseModel):
    """`{"currency": "BTC", "price": "52012.34", "valuation_currency": "GBP", "as_of": "…",
    "source": "builtin"}`, published by the trading service (key = currency)."""

    model_config = ConfigDict(extra="ignore")

    currency: CurrencyCode
    price: WireDecimal
    valuation_currency: CurrencyCode
    as_of: AwareDatetime
    source: str

    @field_validator("price")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if value <= 0:
            raise ValueError("a price is greater than zero")
        # Decimal128's digits, far beyond any feed's (trading's has 8): a longer price could not
        # be written back as the wire's decimal text, and every portfolio holding it would fail.
        if len(value.normalize(_EXACT).as_tuple().digits) > PRICE_SIGNIFICANT_DIGITS:
            raise ValueError(f"a price has at most {PRICE_SIGNIFICANT_DIGITS} significant digits")
        return value


def apply_price_message(book: PriceBook, raw: bytes | None) -> bool:
    """Update the book from one message; an unreadable one (a tombstone too), or one in another
    valuation currency, is logged and skipped (prices are advisory: one bad quote must not stop
    the others)."""
    if raw is None:
        log.warning("price_message_unreadable", error="no value (a tombstone)", value=None)
        return False
    try:
        message = PriceMessage.model_validate(json.loads(raw))
        # In UTC, as the pages label it (a source may stamp another offset).
        as_of = message.as_of.astimezone(UTC)
    except (ValueError, ValidationError, OverflowError) as error:
        log.warning("price_message_unreadable", error=str(error)[:300], value=raw[:200])
        return False
    if message.valuation_currency != book.valuation_currency:
        log.warning("price_message_other_valuation", currency=message.valuation_currency)
        return False
    return book.update(Quote(message.currency, message.price, as_of, message.source))


def prices_reader(
    bootstrap_servers: str, book: PriceBook, topics: Topics, *, lookback: int
) -> RecentMessagesReader:
    """Every wallet process reads every price: no consumer group (so no offsets to commit), from
    `lookback` messages before the end of each partition, so that a restarted wallet knows the
    latest prices at once instead of serving the topic's days-old ones while it replays them."""

    async def handle(value: bytes, key: bytes | None) -> None:
        apply_price_message(book, value)

    return RecentMessagesReader(bootstrap_servers, topics.prices, handle, lookback=lookback)


def describe_prices_channel(described: KafkaBroker, topics: Topics) -> None:
    """The reader above, as the AsyncAPI document shows it (this broker is never started)."""

    @described.subscriber(
        topics.prices,
        group_id=None,
        title="wallet-prices",
        description="Latest price per currency (in GBP) for the portfolio and the pages.",
    )
    async def consume_prices(body: Any) -> None:
        """Described only: `prices_reader` reads the topic."""
