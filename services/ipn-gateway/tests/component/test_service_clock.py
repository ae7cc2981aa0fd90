"""Every handler of a built gateway takes instants as MongoDB keeps them, whole milliseconds: what
it answers or compares is what a later read of the record shows."""

from __future__ import annotations

from datetime import UTC, datetime

from ipn_gateway.bootstrap import build_gateway
from ipn_gateway.settings import GatewaySettings

# Finer than MongoDB keeps: 123 ms and 456 µs.
NOW = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


async def test_every_handler_takes_whole_milliseconds() -> None:
    settings = GatewaySettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        mongodb_url="mongodb://127.0.0.1:1/?directConnection=true",
    )
    gateway = build_gateway(settings, clock=lambda: NOW)
    try:
        handlers = gateway.handlers
        clocks = [
            handlers.ipn.clock,
            handlers.deposits.clock,
            handlers.withdrawals.clock,
            handlers.reviews.clock,
        ]
        assert [clock() for clock in clocks] == [NOW.replace(microsecond=123000)] * 4
    finally:
        await gateway.mongo.close()
        await gateway.http.aclose()
