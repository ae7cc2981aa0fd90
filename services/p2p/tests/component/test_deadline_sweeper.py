"""The deadline sweeper: unpaid trades past their payment deadline are cancelled, the earliest
deadline first a page per sweep, and a trade whose unlock cannot be built holds back no other."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from structlog.testing import capture_logs

from p2p.application.ports import Trade
from p2p.application.trades import Caller
from p2p.domain.trades import Action, TradeStatus
from shared.prices import FUTURE_TOLERANCE


async def escrowed_trade(memory_p2p: Any, *, seller_id: str | None = None) -> Trade:
    """A trade whose escrow is locked, waiting for the buyer's payment; with `seller_id`, as an
    earlier version stored it, for a seller id no wallet command can carry (a space)."""
    offer_id = await memory_p2p.funded_offer()
    trade: Trade = await memory_p2p.trades.create("bea", offer_id, "0.01")
    await memory_p2p.deliver_all()
    escrowed = memory_p2p.store.trades[trade.trade_id]
    assert escrowed.status is TradeStatus.ESCROWED
    if seller_id is not None:
        escrowed = replace(escrowed, seller_id=seller_id)
        memory_p2p.store.trades[trade.trade_id] = escrowed
    return escrowed


async def test_a_trade_whose_unlock_cannot_be_built_holds_back_no_other(memory_p2p: Any) -> None:
    """It stopped the sweep at that trade, the earliest deadline, on every run: no trade after it
    was cancelled at its deadline, so its seller's coins stayed locked and the buyer could still
    mark it paid. It is logged and left as it is, and the others are cancelled."""
    stuck = await escrowed_trade(memory_p2p, seller_id="old sam")
    memory_p2p.clock.advance(timedelta(seconds=1))
    due = await escrowed_trade(memory_p2p)
    memory_p2p.clock.advance(timedelta(minutes=16))
    with capture_logs() as logs:
        assert await memory_p2p.trades.expire_due() == 1
    assert memory_p2p.store.trades[due.trade_id].status is TradeStatus.CANCELLING
    [unlock] = memory_p2p.publisher.queue
    assert (unlock.type, unlock.reference_id) == ("unlock", due.trade_id)
    [logged] = [e for e in logs if e["event"] == "trade.unlock_unsendable"]
    assert (logged["trade_id"], logged["log_level"]) == (stuck.trade_id, "error")
    assert logged["reason"].startswith("invalid_field: user_id")
    assert memory_p2p.store.trades[stuck.trade_id] == stuck


async def test_trades_that_cannot_be_cancelled_do_not_take_every_sweep(memory_p2p: Any) -> None:
    """A sweep takes a page of trades past their deadline, the earliest first, and the next goes
    on after it: a page of trades whose unlock cannot be built (they stay unpaid, the earliest
    deadlines of all) no longer keeps a later one from ever being cancelled."""
    for _ in range(2):
        await escrowed_trade(memory_p2p, seller_id="old sam")
    memory_p2p.clock.advance(timedelta(seconds=1))
    due = await escrowed_trade(memory_p2p)
    memory_p2p.clock.advance(timedelta(minutes=16))
    assert await memory_p2p.trades.expire_due(limit=2) == 0  # a page of the stuck ones
    assert await memory_p2p.trades.expire_due(limit=2) == 1  # on after it
    assert memory_p2p.store.trades[due.trade_id].status is TradeStatus.CANCELLING
    assert await memory_p2p.trades.expire_due(limit=2) == 0  # back to the start


async def test_a_sweeper_whose_clock_runs_fast_cancels_no_trade_before_its_deadline(
    memory_p2p: Any,
) -> None:
    """Every p2p process sweeps by its own clock. One running 3 s fast cancelled a trade 3 s
    before the deadline its buyer was shown, and the buyer's mark-paid just before it was
    refused. The sweeper takes a deadline as passed FUTURE_TOLERANCE after it."""
    trade = await escrowed_trade(memory_p2p)
    deadline = trade.payment_deadline
    memory_p2p.clock.now = deadline + timedelta(seconds=3)  # the fast host, at the deadline
    assert await memory_p2p.trades.expire_due() == 0
    memory_p2p.clock.now = deadline - timedelta(milliseconds=1)  # the buyer's host
    paid = await memory_p2p.trades.act(Caller("bea"), trade.trade_id, Action.MARK_PAID)
    assert paid.status is TradeStatus.PAID

    other = await escrowed_trade(memory_p2p)
    memory_p2p.clock.now = other.payment_deadline + FUTURE_TOLERANCE - timedelta(milliseconds=1)
    assert await memory_p2p.trades.expire_due() == 0
    memory_p2p.clock.now += timedelta(milliseconds=1)
    assert await memory_p2p.trades.expire_due() == 1
    assert memory_p2p.store.trades[other.trade_id].status is TradeStatus.CANCELLING
