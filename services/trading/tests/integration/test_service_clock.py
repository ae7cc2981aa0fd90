"""The service's clock over MongoDB, which keeps instants to the millisecond: what a create
answers is what a later read shows. Built, not started: only the database is used (the order's
lock cannot be sent, so it stays pending, as any order does until its lock lands)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from trading.bootstrap import build_service, create_trading_app
from trading.settings import TradingSettings
from trading.spot.feature import build_spot_feature

from ..conftest import JWT_SECRET, auth

# Finer than MongoDB keeps: 123 ms and 456 µs.
NOW = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


async def test_a_spot_order_answers_the_instants_a_later_read_shows(
    mongodb_url: str, mongo_database: AsyncDatabase[dict[str, Any]]
) -> None:
    settings = TradingSettings(
        auth_jwt_secret=JWT_SECRET,
        kafka_bootstrap_servers="127.0.0.1:1",
        mongodb_url=mongodb_url,
        trading_mongodb_database=mongo_database.name,
    )
    service = build_service(settings, features=[build_spot_feature], clock=lambda: NOW)
    transport = httpx.ASGITransport(app=create_trading_app(service))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://trading") as http:
            placed = await http.post(
                "/api/trading/execute",
                json={
                    "pair": "BTC-GBP",
                    "side": "sell",
                    "type": "limit",
                    "amount": "0.01",
                    "price": "52000.00",
                    "expires_in_seconds": 60,
                },
                headers=auth("amy"),
            )
            assert placed.status_code == 202, placed.text
            made = placed.json()
            assert made["created_at"] == "2026-11-30T12:00:00.123000+00:00"
            read = await http.get(f"/api/trading/orders/{made['order_id']}", headers=auth("amy"))
            assert read.status_code == 200, read.text
            shown = read.json()
            for instant in ("created_at", "updated_at", "expires_at"):
                assert shown[instant] == made[instant], instant
    finally:
        await service.mongo.close()
