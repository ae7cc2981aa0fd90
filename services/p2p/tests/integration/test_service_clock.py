"""The service's clock over MongoDB, which keeps instants to the millisecond: what the handlers
answer when they create or change an offer is what a later read of it shows. Built, not started:
only the database is used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from p2p.bootstrap import build_p2p
from p2p.settings import P2pSettings

# Finer than MongoDB keeps: 123 ms and 456 µs.
NOW = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


async def test_a_create_answers_what_a_later_read_shows(
    mongodb_url: str, mongo_database: AsyncDatabase[dict[str, Any]]
) -> None:
    now = NOW
    p2p = build_p2p(
        P2pSettings(mongodb_url=mongodb_url, p2p_mongodb_database=mongo_database.name),
        clock=lambda: now,
    )
    try:
        offers = p2p.handlers.offers
        made = await offers.create(
            "sam",
            currency="BTC",
            fiat_currency="GBP",
            price="52000",
            min_amount="0.001",
            max_amount="0.5",
            payment_methods=["bank_transfer"],
            payment_window_minutes=15,
        )
        assert made.created_at == NOW.replace(microsecond=123000)
        assert (await offers.get(made.offer_id)).public() == made.public()
        now += timedelta(microseconds=1999)
        withdrawn = await offers.withdraw("sam", made.offer_id)
        assert withdrawn.updated_at == NOW.replace(microsecond=125000)
        assert (await offers.get(made.offer_id)).public() == withdrawn.public()
    finally:
        await p2p.mongo.close()
