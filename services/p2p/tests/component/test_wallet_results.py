"""Which wallet results move a trade: only the answers to the commands the trade itself recorded.

A result names its trade through its reference, which is text anyone producing to the wallet can
write: another producer's command under a trade's reference, or the wallet's refusal echoing a
malformed message, must not fail, release or cancel a trade."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from p2p.application.ports import Trade
from p2p.application.trades import Caller
from p2p.domain.trades import Action, TradeStatus
from shared.messaging import CommandResult


async def pending_trade(memory_p2p: Any) -> Trade:
    offer_id = await memory_p2p.funded_offer()
    trade: Trade = await memory_p2p.trades.create("bea", offer_id, "0.01")
    assert trade.status is TradeStatus.PENDING_ESCROW
    return trade


def refusal(trade: Trade, **changes: str) -> CommandResult:
    """A refusal of the trade's own lock, with some of its identity changed."""
    lock = trade.outbox[0].command
    fields = {
        "command_id": lock.command_id,
        "type": lock.type,
        "transaction_type": lock.transaction_type,
        "reference_id": trade.trade_id,
        "user_id": lock.user_id,
        "status": "rejected",
        "reason": "unknown_transaction_type",
    }
    return CommandResult.model_validate(fields | changes)


async def test_a_refusal_of_a_command_the_trade_never_sent_changes_nothing(
    memory_p2p: Any,
) -> None:
    trade = await pending_trade(memory_p2p)
    foreign = refusal(trade, command_id="another-producers-command", user_id="mallory")

    after = await memory_p2p.trades.apply_result(foreign)

    assert after.status is TradeStatus.PENDING_ESCROW
    # The trade's own lock then applies: the trade is escrowed, nothing is stranded.
    await memory_p2p.deliver_all()
    escrowed = memory_p2p.store.trades[trade.trade_id]
    assert (escrowed.status, escrowed.escrow_locked) == (TradeStatus.ESCROWED, True)
    assert memory_p2p.wallet.locked("sam", "BTC") == Decimal("0.01001")


async def test_a_result_is_the_trades_only_if_its_id_type_and_user_are_the_commands(
    memory_p2p: Any,
) -> None:
    trade = await pending_trade(memory_p2p)
    for changed in ({"type": "unlock"}, {"user_id": "bea"}, {"command_id": "x" * 32}):
        after = await memory_p2p.trades.apply_result(refusal(trade, **changed))
        assert after.status is TradeStatus.PENDING_ESCROW, changed

    # The trade's own refusal still fails it, as before: the lock never applied.
    failed = await memory_p2p.trades.apply_result(refusal(trade))
    assert (failed.status, failed.reason) == (TradeStatus.FAILED, "unknown_transaction_type")


async def test_a_trade_whose_result_was_lost_is_asked_about_again(memory_p2p: Any) -> None:
    """The wallet applied the lock but its result never reached p2p (lost, or dead-lettered after
    failing there): after `ask_again_after` the relay sends the lock again, the wallet answers
    with its first outcome, and the trade moves on. Nothing is locked twice."""
    trade = await pending_trade(memory_p2p)
    [lock] = memory_p2p.publisher.queue
    memory_p2p.publisher.queue.clear()
    memory_p2p.wallet.apply(lock)  # applied; its result is lost on the way back

    relay = memory_p2p.relay
    memory_p2p.clock.advance(relay.ask_again_after - timedelta(seconds=1))
    assert await relay.ask_again() == 0  # not yet: the answer may still be on its way
    memory_p2p.clock.advance(timedelta(seconds=2))
    assert await relay.ask_again() == 1
    await memory_p2p.deliver_all()

    escrowed = memory_p2p.store.trades[trade.trade_id]
    assert (escrowed.status, escrowed.escrow_locked) == (TradeStatus.ESCROWED, True)
    assert memory_p2p.wallet.locked("sam", "BTC") == Decimal("0.01001")
    memory_p2p.clock.advance(relay.ask_again_after * 2)
    assert await relay.ask_again() == 0  # escrowed: nothing awaited from the wallet


async def refused_release(memory_p2p: Any) -> Trade:
    """A trade whose release the wallet refused: noted for ops, still `releasing`."""
    trade = await pending_trade(memory_p2p)
    await memory_p2p.deliver_all()
    await memory_p2p.trades.act(Caller("bea"), trade.trade_id, Action.MARK_PAID)
    memory_p2p.publisher.answer_now = False
    releasing = await memory_p2p.trades.act(Caller("sam"), trade.trade_id, Action.RELEASE)
    assert releasing.status is TradeStatus.RELEASING
    [release] = memory_p2p.publisher.queue
    memory_p2p.publisher.queue.clear()
    memory_p2p.publisher.answer_now = True
    refused = CommandResult.model_validate(
        {
            "command_id": release.command_id,
            "type": release.type,
            "transaction_type": release.transaction_type,
            "reference_id": trade.trade_id,
            "user_id": release.user_id,
            "status": "rejected",
            "reason": "insufficient_funds",
        }
    )
    noted: Trade = await memory_p2p.trades.apply_result(refused)
    return noted


async def test_a_command_the_wallet_refused_is_not_asked_about_again(memory_p2p: Any) -> None:
    noted = await refused_release(memory_p2p)
    assert noted.status is TradeStatus.RELEASING
    assert noted.notes == ("transfer_locked_rejected: insufficient_funds",)

    memory_p2p.clock.advance(memory_p2p.relay.ask_again_after * 2)
    assert await memory_p2p.relay.ask_again() == 0  # ops must look; asking would repeat it


async def test_a_release_noted_refused_without_an_outcome_is_asked_about_again(
    memory_p2p: Any,
) -> None:
    """Earlier versions noted a `processing_failed` answer (the wallet recorded no outcome) as
    the release's refusal, and the trade waited for ops for good with the seller's coins locked,
    although the same release sent again applies."""
    trade = await pending_trade(memory_p2p)
    await memory_p2p.deliver_all()
    await memory_p2p.trades.act(Caller("bea"), trade.trade_id, Action.MARK_PAID)
    memory_p2p.publisher.answer_now = False
    await memory_p2p.trades.act(Caller("sam"), trade.trade_id, Action.RELEASE)
    memory_p2p.publisher.queue.clear()  # failed on by the wallet: nothing applied
    memory_p2p.publisher.answer_now = True
    note = "transfer_locked_rejected: processing_failed"
    await memory_p2p.store.note(trade.trade_id, note, memory_p2p.clock())

    memory_p2p.clock.advance(memory_p2p.relay.ask_again_after * 2)
    assert await memory_p2p.relay.ask_again() == 1
    await memory_p2p.deliver_all()
    completed = memory_p2p.store.trades[trade.trade_id]
    assert completed.status is TradeStatus.COMPLETED
    assert memory_p2p.wallet.locked("sam", "BTC") == Decimal(0)


async def test_refused_trades_waiting_for_ops_do_not_keep_a_lost_result_from_being_asked_about(
    memory_p2p: Any,
) -> None:
    """Refused trades stay in flight and unmoved, the oldest of all: a pass takes a page of
    them, oldest first, and the next pass goes on after it, so a whole page of them no longer
    takes every pass and leaves the trade behind them never asked about again."""
    noted = await refused_release(memory_p2p)
    page = memory_p2p.relay.ask_again_page
    for n in range(1, page):
        copy = replace(noted, trade_id=f"{noted.trade_id}-{n:03}")
        memory_p2p.store.trades[copy.trade_id] = copy
    memory_p2p.clock.advance(timedelta(minutes=1))
    trade = await pending_trade(memory_p2p)
    [lock] = memory_p2p.publisher.queue
    memory_p2p.publisher.queue.clear()
    memory_p2p.wallet.apply(lock)  # applied; its result is lost on the way back

    relay = memory_p2p.relay
    memory_p2p.clock.advance(relay.ask_again_after * 2)
    assert await relay.ask_again() == 0  # a full page of refused trades
    assert await relay.ask_again() == 1  # on after it: the lost result
    await memory_p2p.deliver_all()
    escrowed = memory_p2p.store.trades[trade.trade_id]
    assert (escrowed.status, escrowed.escrow_locked) == (TradeStatus.ESCROWED, True)
    assert memory_p2p.wallet.locked("sam", "BTC") == Decimal("0.01001") * 2
    assert await relay.ask_again() == 0  # back to the start: the refused ones again, no other
