"""The outbox relay: commands recorded and never marked published go out again, trades oldest
first a page per pass, and a stored command that cannot be built holds back no other trade."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from structlog.testing import capture_logs

from p2p.application.ports import Trade
from p2p.application.relay import OutboxRelay


async def unpublished_trade(memory_p2p: Any, *, user_id: str | None = None) -> Trade:
    """A trade whose lock was recorded but never published (the broker was away); with
    `user_id`, its lock as an earlier version stored it, with a user id no command can carry."""
    offer_id = await memory_p2p.funded_offer()
    trade: Trade = await memory_p2p.trades.create("bea", offer_id, "0.01")
    memory_p2p.publisher.queue.clear()
    [entry] = trade.outbox
    command = entry.command
    if user_id is not None:
        command = command.model_copy(update={"user_id": user_id})
    stored = replace(trade, outbox=(replace(entry, command=command, published=False),))
    memory_p2p.store.trades[trade.trade_id] = stored
    return stored


async def test_a_command_that_cannot_be_built_holds_back_no_other_trade(memory_p2p: Any) -> None:
    """It stopped the pass (and the resend at start) at that trade on every run, over MongoDB
    reading it failed the whole page; it is logged and left, and the others go."""
    broken = await unpublished_trade(memory_p2p, user_id="old user")
    good = await unpublished_trade(memory_p2p)
    memory_p2p.clock.advance(timedelta(seconds=1))
    with capture_logs() as logs:
        assert await memory_p2p.relay.run_once(grace=timedelta(0)) == 1
    assert [c.reference_id for c in memory_p2p.publisher.queue] == [good.trade_id]
    [unsendable] = [e for e in logs if e["event"] == "outbox.command_unsendable"]
    assert (unsendable["trade_id"], unsendable["log_level"]) == (broken.trade_id, "error")
    assert unsendable["command_id"] == broken.outbox[0].command_id
    assert unsendable["reason"].startswith("invalid_field")
    assert not memory_p2p.store.trades[broken.trade_id].outbox[0].published
    assert memory_p2p.store.trades[good.trade_id].outbox[0].published


async def test_unsendable_trades_do_not_take_every_pass(memory_p2p: Any) -> None:
    """A pass takes a page of trades, oldest first, and the next goes on after it: a page of
    trades whose command cannot be built no longer keeps a newer one from ever being sent."""
    relay = OutboxRelay(memory_p2p.store, memory_p2p.publisher, memory_p2p.clock, outbox_page=2)
    for _ in range(2):
        await unpublished_trade(memory_p2p, user_id="old user")
    memory_p2p.clock.advance(timedelta(seconds=1))
    good = await unpublished_trade(memory_p2p)
    memory_p2p.clock.advance(timedelta(seconds=1))
    assert await relay.run_once(grace=timedelta(0)) == 0  # a full page of unsendable ones
    assert await relay.run_once(grace=timedelta(0)) == 1  # on after it
    assert [c.reference_id for c in memory_p2p.publisher.queue] == [good.trade_id]
    assert await relay.run_once(grace=timedelta(0)) == 0  # back to the start: only those again
