"""A trade holding a command the command model now refuses (stored by an earlier version: a user
id from a token subject with a space), over the memory stores and over MongoDB: reading it failed
on MongoDB, and with it the ask-again pass and the deadline sweeper on every run (holding back
every other trade) and the trade's GET. It is read all the same; what sends it reports it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase
from structlog.testing import capture_logs

from p2p.adapters.mongo import TRADES, MongoOffers, MongoTrades, ensure_indexes
from p2p.application.ports import Trade
from p2p.application.relay import OutboxRelay
from p2p.domain.trades import TradeStatus
from p2p.entrypoints.http import Handlers, include_routes
from shared.http import create_app, make_token

SECRET = "component-jwt-secret-of-at-least-32-bytes"
REFUSED = "old user"
REFUSED_SELLER = "old sam"


@pytest_asyncio.fixture
async def p2p(
    memory_or_mongo: AsyncDatabase[dict[str, Any]] | None, memory_p2p: Any
) -> AsyncIterator[Any]:
    """The memory service, its trades and offers on MongoDB for the MongoDB variant; `plant`
    makes a trade's first command one the model refuses, as an earlier version stored it, and
    `plant_seller` its seller id one no wallet command can carry."""
    database = memory_or_mongo
    if database is None:

        async def plant_in_memory(trade_id: str) -> None:
            trade = memory_p2p.store.trades[trade_id]
            entry = trade.outbox[0]
            refused = entry.command.model_copy(update={"user_id": REFUSED})
            outbox = (replace(entry, command=refused), *trade.outbox[1:])
            memory_p2p.store.trades[trade_id] = replace(trade, outbox=outbox)

        async def plant_seller_in_memory(trade_id: str) -> None:
            trade = memory_p2p.store.trades[trade_id]
            memory_p2p.store.trades[trade_id] = replace(trade, seller_id=REFUSED_SELLER)

        memory_p2p.plant = plant_in_memory
        memory_p2p.plant_seller = plant_seller_in_memory
        yield memory_p2p
        return
    await ensure_indexes(database)
    trades, offers = MongoTrades(database), MongoOffers(database)
    memory_p2p.offers.offers = memory_p2p.trades.offers = offers
    memory_p2p.trades.trades = memory_p2p.store = trades
    memory_p2p.relay = OutboxRelay(trades, memory_p2p.publisher, memory_p2p.clock)

    async def plant_in_mongo(trade_id: str) -> None:
        await database[TRADES].update_one(
            {"_id": trade_id}, {"$set": {"outbox.0.command.user_id": REFUSED}}
        )

    async def plant_seller_in_mongo(trade_id: str) -> None:
        await database[TRADES].update_one(
            {"_id": trade_id}, {"$set": {"seller_id": REFUSED_SELLER}}
        )

    memory_p2p.plant = plant_in_mongo
    memory_p2p.plant_seller = plant_seller_in_mongo
    try:
        yield memory_p2p
    finally:
        await database.client.drop_database(database.name)


async def trade(p2p: Any, *, refused: bool = False) -> Trade:
    """A trade whose lock was sent and applied but whose result never came; with `refused`, its
    lock as an earlier version stored it."""
    offer_id = await p2p.funded_offer()
    made: Trade = await p2p.trades.create("bea", offer_id, "0.01")
    [lock] = p2p.publisher.queue
    p2p.publisher.queue.clear()
    p2p.wallet.apply(lock)
    if refused:
        await p2p.plant(made.trade_id)
    p2p.clock.advance(timedelta(seconds=1))
    return made


async def test_the_ask_again_pass_asks_about_the_others(p2p: Any) -> None:
    first = await trade(p2p)
    stuck = await trade(p2p, refused=True)
    last = await trade(p2p)
    p2p.clock.advance(p2p.relay.ask_again_after)
    with capture_logs() as logs:
        assert await p2p.relay.ask_again() == 2
    assert [c.reference_id for c in p2p.publisher.queue] == [first.trade_id, last.trade_id]
    [logged] = [e for e in logs if e["event"] == "trade.command_unsendable"]
    assert (logged["trade_id"], logged["log_level"]) == (stuck.trade_id, "error")
    assert logged["command_id"] == stuck.outbox[0].command_id
    assert logged["reason"].startswith("invalid_field: user_id")
    await p2p.deliver_all()
    for moved in (first, last):
        assert (await p2p.store.get(moved.trade_id)).status is TradeStatus.ESCROWED
    left = await p2p.store.get(stuck.trade_id)
    assert (left.status, left.updated_at) == (TradeStatus.PENDING_ESCROW, stuck.updated_at)


async def test_the_deadline_sweeper_cancels_every_trade_past_its_deadline(p2p: Any) -> None:
    """Its unlock is built from the trade, not from the refused lock: it is cancelled too."""
    trades = [await trade(p2p), await trade(p2p, refused=True), await trade(p2p)]
    await p2p.deliver_all()
    p2p.clock.advance(timedelta(minutes=16))
    assert await p2p.trades.expire_due() == 3
    for expired in trades:
        assert (await p2p.store.get(expired.trade_id)).status is TradeStatus.CANCELLING


async def test_its_get_and_the_listing_answer(p2p: Any) -> None:
    stuck = await trade(p2p, refused=True)
    app = create_app(title="p2p", auth_secret=SECRET, ready=_ready)
    include_routes(app, Handlers(offers=p2p.offers, trades=p2p.trades))
    headers = {"Authorization": f"Bearer {make_token(SECRET, 'bea', ())}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p2p") as client:
        got = await client.get(f"/api/p2p/enhanced/trades/{stuck.trade_id}", headers=headers)
        assert got.status_code == 200, got.text
        assert (got.json()["trade_id"], got.json()["status"]) == (stuck.trade_id, "pending_escrow")
        mine = await client.get("/api/p2p/enhanced/trades", headers=headers)
        assert mine.status_code == 200, mine.text
        assert stuck.trade_id in str(mine.json())


async def test_an_action_whose_command_cannot_be_built_is_refused(p2p: Any) -> None:
    """The buyer cancelling an escrowed trade whose seller id an earlier version stored with a
    space: the unlock cannot be built, and the request failed with a 500 after the decision. It is
    refused with 409 `trade_unsendable` before anything moves, and logged for support."""
    made: Trade = await p2p.trades.create("bea", await p2p.funded_offer(), "0.01")
    await p2p.deliver_all()
    await p2p.plant_seller(made.trade_id)
    before = await p2p.store.get(made.trade_id)
    assert before.status is TradeStatus.ESCROWED
    app = create_app(title="p2p", auth_secret=SECRET, ready=_ready)
    include_routes(app, Handlers(offers=p2p.offers, trades=p2p.trades))
    headers = {"Authorization": f"Bearer {make_token(SECRET, 'bea', ())}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p2p") as client:
        with capture_logs() as logs:
            cancel = await client.post(
                "/api/p2p/enhanced/cancel-trade",
                json={"trade_id": made.trade_id, "reason": "changed my mind"},
                headers=headers,
            )
    assert (cancel.status_code, cancel.json()["error"]["code"]) == (409, "trade_unsendable")
    assert await p2p.store.get(made.trade_id) == before
    assert p2p.publisher.queue == []
    [logged] = [e for e in logs if e["event"] == "trade.action_unsendable"]
    assert (logged["trade_id"], logged["action"], logged["by"]) == (made.trade_id, "cancel", "bea")
    assert (logged["log_level"], logged["reason"][:22]) == ("error", "invalid_field: user_id")


async def _ready() -> bool:
    return True
