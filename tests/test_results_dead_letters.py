"""Every service that follows wallet.results keeps what it cannot apply in its own dead letters
(after the shared consumer's retries) instead of holding its partition forever: the gateway, p2p
and trading are wired alike. That each reports a stuck consumer on /healthz is tested with each
service running (`test_healthz_reports_a_stuck_results_consumer` in its own tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from ipn_gateway.bootstrap import build_gateway
from ipn_gateway.settings import GatewaySettings
from p2p.bootstrap import build_p2p
from p2p.settings import P2pSettings
from shared.messaging import CommandResult
from shared.mongo import MongoDeadLetters
from shared.results_consumer import GroupConsumer
from trading.bootstrap import build_service
from trading.settings import TradingSettings

RESULT = CommandResult(
    command_id="c1",
    type="lock",
    transaction_type="p2p_escrow",
    reference_id="trade_1",
    user_id="alice",
    status="applied",
)


def consumers() -> dict[str, GroupConsumer[Any]]:
    return {
        "ipn_gateway_dead_letters": build_gateway(GatewaySettings()).results,
        "p2p_dead_letters": build_p2p(P2pSettings()).results,
        "trading_dead_letters": build_service(TradingSettings()).results,
    }


def test_each_service_dead_letters_into_its_own_collection() -> None:
    for collection, consumer in consumers().items():
        letters = consumer._dead_letters
        assert isinstance(letters, MongoDeadLetters), collection
        assert letters._letters.name == collection


@pytest.mark.parametrize(
    "collection", ["ipn_gateway_dead_letters", "p2p_dead_letters", "trading_dead_letters"]
)
async def test_a_result_that_cannot_be_applied_is_kept_and_the_partition_moves_on(
    mongo_database: AsyncDatabase[dict[str, Any]], collection: str
) -> None:
    consumer = consumers()[collection]
    letters = MongoDeadLetters(mongo_database, collection)
    consumer._dead_letters = letters
    consumer._retry_delay = 0.01

    async def unappliable(_: CommandResult) -> None:
        raise ValueError("no such trade")

    consumer._dispatch = unappliable  # type: ignore[attr-defined]
    async with asyncio.timeout(10):
        await consumer.apply(RESULT, b'{"poison": true}')  # type: ignore[attr-defined]
    [letter] = await letters.all()
    assert (letter["raw"], letter["reason"]) == (b'{"poison": true}', "ValueError: no such trade")
    assert consumer.dead_lettered == 1
    assert not consumer.stuck
