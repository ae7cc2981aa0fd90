"""The subscriber on `market.prices` that keeps the wallet's prices read model."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.message import StreamMessage
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError, field_validator

from shared.logging import get_logger
from shared.messaging.commands import CurrencyCode, WireDecimal
from shared.messaging.topics import Topics
from wallet.application.prices import PriceBook, Quote

log = get_logger(__name__)


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


async def _leave_undecoded(message: StreamMessage[Any]) -> None:
    """apply_price_message decodes and checks each message itself."""


def register_prices_consumer(broker: KafkaBroker, book: PriceBook, topics: Topics) -> None:
    """Every wallet process reads every price: no consumer group (so no offsets to commit), from
    the beginning of the topic, so that a restarted wallet knows the latest prices at once."""

    @broker.subscriber(
        topics.prices,
        group_id=None,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        decoder=_leave_undecoded,
        title="wallet-prices",
        description="Latest price per currency (in GBP) for the portfolio and the pages.",
    )
    async def consume_prices(body: Any, message: KafkaMessage) -> None:
        raw = message.raw_message
        for record in raw if isinstance(raw, tuple) else (raw,):
            apply_price_message(book, record.value)
