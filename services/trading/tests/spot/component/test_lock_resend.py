"""The lock relay over the in-memory store: orders still pending after the grace period get their
lock sent again, and one whose lock cannot be built from what is stored (a value the wallet's
command refuses) is logged and skipped instead of holding back every order after it; and the
expiry sweep, whose expired orders left open hold back no other's cancel."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from trading.messaging import EventPublisher
from trading.spot.adapters.memory import MemorySpotStore
from trading.spot.domain.book import OrderType, Side, Status
from trading.spot.domain.markets import MARKETS, Fees
from trading.spot.messages import decode
from trading.spot.orders import SpotOrder
from trading.spot.service import SpotOrders
from trading.spot.wallet import SpotWallet
from trading.testing import AnsweringWallet, FakeClock

MARKET = MARKETS["BTC-GBP"]
GRACE = timedelta(seconds=30)


class Published(EventPublisher):
    def __init__(self) -> None:
        super().__init__("unused:9092")

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        raise AssertionError("resending a lock publishes nothing to the matchers")


def pending_sell(order_id: str, clock: FakeClock, **changes: Any) -> SpotOrder:
    """A pending limit sell of 0.01 BTC at 100.00, placed a minute ago (its lock unanswered)."""
    steps = MARKET.steps(Decimal("0.01"))
    order = SpotOrder(
        order_id=order_id,
        user_id="amy",
        pair=MARKET.pair,
        side=Side.SELL,
        type=OrderType.LIMIT,
        price=Decimal("100.00"),
        amount=Decimal("0.01"),
        quote_amount=None,
        lock_currency="BTC",
        lock_amount=Decimal("0.01"),
        created_at=clock() - timedelta(minutes=1),
        remaining=steps,
        hold=MARKET.base_units(steps),
    )
    return replace(order, **changes)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"lock_amount": Decimal("0.000000001")}, "invalid_amount: amount_too_precise"),
        ({"lock_amount": Decimal(0)}, "invalid_amount: amount_not_positive"),
        ({"lock_currency": "DOGE"}, "unknown_currency"),
        ({"user_id": "amy smith"}, "invalid_field: user_id"),
    ],
)
async def test_an_order_whose_lock_cannot_be_built_holds_back_no_other(
    clock: FakeClock, bad: dict[str, Any], reason: str
) -> None:
    store = MemorySpotStore()
    client = AnsweringWallet()
    orders = SpotOrders(
        store, SpotWallet(client), Published(), "t.trading.orders", Fees.of("0.001", "0.002"), clock
    )
    # the bad one first: the store hands pending orders out oldest first, then by id
    for order in (
        pending_sell("bad", clock, **bad),
        pending_sell("good-1", clock),
        pending_sell("good-2", clock),
    ):
        assert await store.add(order) is order

    with capture_logs() as logs:
        assert await orders.resend_locks(GRACE) == 2

    assert [c.reference_id for c in client.sent] == ["good-1:lock", "good-2:lock"]
    assert [(c.type, c.hold_id, c.amount) for c in client.sent] == [  # type: ignore[union-attr]
        ("lock", "good-1", Decimal("0.01")),
        ("lock", "good-2", Decimal("0.01")),
    ]
    [unsendable] = [e for e in logs if e["event"] == "spot.lock_unsendable"]
    assert unsendable["order_id"] == "bad"
    assert unsendable["log_level"] == "error"
    assert unsendable["reason"].startswith(reason)
    # left as it was: still pending, and named again on the next pass (never silently dropped)
    kept = await store.get("bad")
    assert kept is not None
    assert kept.status is Status.PENDING
    client.sent.clear()
    with capture_logs() as logs:
        assert await orders.resend_locks(GRACE) == 0  # the good ones were sent just now
    assert [e["order_id"] for e in logs if e["event"] == "spot.lock_unsendable"] == ["bad"]
    clock.advance(GRACE.total_seconds() + 1)  # once per grace: due again
    assert await orders.resend_locks(GRACE) == 2
    assert [c.reference_id for c in client.sent] == ["good-1:lock", "good-2:lock"]


async def test_a_pending_order_has_its_lock_sent_again_once_per_grace_not_every_pass(
    clock: FakeClock,
) -> None:
    """The relay runs every few seconds; an order still pending (its lock's result lost again,
    or the wallet slow) had its lock sent again on every one of them once past the grace."""
    store, client = MemorySpotStore(), AnsweringWallet()
    orders = SpotOrders(
        store, SpotWallet(client), Published(), "t.trading.orders", Fees.of("0.001", "0.002"), clock
    )
    assert await store.add(pending_sell("slow", clock)) is not None
    assert await orders.resend_locks(GRACE) == 1
    for _ in range(5):
        clock.advance(5)  # a pass every few seconds
        assert await orders.resend_locks(GRACE) == 0
    clock.advance(6)  # past the grace since it was sent again
    assert await orders.resend_locks(GRACE) == 1
    assert [c.reference_id for c in client.sent] == ["slow:lock", "slow:lock"]


async def test_orders_that_cannot_be_sent_leave_every_other_its_turn(clock: FakeClock) -> None:
    """More unsendable orders than a pass takes: the passes go on page after page, so the good
    order behind them is sent on the second pass, and the first pass starts again after the end."""
    store = MemorySpotStore()
    client = AnsweringWallet()
    orders = SpotOrders(
        store,
        SpotWallet(client),
        Published(),
        "t.trading.orders",
        Fees.of("0.001", "0.002"),
        clock,
        resend_page=2,
    )
    placed = clock() - timedelta(minutes=1)
    for index, order_id in enumerate(("bad-1", "bad-2", "bad-3", "good")):
        changes: dict[str, Any] = {"created_at": placed + timedelta(seconds=index)}
        if order_id.startswith("bad"):
            changes["lock_currency"] = "DOGE"
        assert await store.add(pending_sell(order_id, clock, **changes)) is not None

    named: list[list[str]] = []
    for _ in range(4):
        with capture_logs() as logs:
            await orders.resend_locks(GRACE)
        named.append([e["order_id"] for e in logs if e["event"] == "spot.lock_unsendable"])
    assert named == [["bad-1", "bad-2"], ["bad-3"], [], ["bad-1", "bad-2"]]
    assert [c.reference_id for c in client.sent] == ["good:lock"]


class Cancels(EventPublisher):
    """Keeps the ids of the orders the expiry sweep asks the matchers to cancel."""

    def __init__(self) -> None:
        super().__init__("unused:9092")
        self.order_ids: list[str] = []

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        message = decode(value)
        assert (message.kind, message.reason) == ("cancel", "expired")
        self.order_ids.append(message.order_id)


def sweeping(
    clock: FakeClock, expire_page: int = 200
) -> tuple[MemorySpotStore, Cancels, SpotOrders]:
    """A store, the cancels published, and the orders service whose expiry sweep publishes them."""
    store, cancels = MemorySpotStore(), Cancels()
    fees = Fees.of("0.001", "0.002")
    wallet = SpotWallet(AnsweringWallet())
    orders = SpotOrders(
        store, wallet, cancels, "t.trading.orders", fees, clock, expire_page=expire_page
    )
    return store, cancels, orders


async def test_expired_orders_left_open_do_not_keep_another_from_its_cancel(
    clock: FakeClock,
) -> None:
    """Expired orders a matcher does not close (their market's matcher is not running) stay open,
    the earliest expiry of all: a sweep took up to 200 of them in no set order on every pass, so an
    expired order behind them never had its cancel sent and could still fill. A sweep now takes
    them the earliest expiry first, a page at a time, the next going on after the last."""
    store, cancels, orders = sweeping(clock, expire_page=2)
    for n, order_id in enumerate(("stuck-1", "stuck-2", "due")):
        expires_at = clock() - timedelta(minutes=3 - n)
        open_order = pending_sell(order_id, clock, status=Status.OPEN, expires_at=expires_at)
        assert await store.add(open_order) is not None
    for expected in (2, 1, 2):  # a full page of the stuck ones; on after it; back to the start
        assert await orders.expire(GRACE) == expected
        clock.advance(GRACE.total_seconds() + 1)  # each due again
    assert cancels.order_ids == ["stuck-1", "stuck-2", "due", "stuck-1", "stuck-2"]


async def test_an_expired_order_left_open_has_its_cancel_sent_again_once_per_period(
    clock: FakeClock,
) -> None:
    """The sweep runs every few seconds; an expired order that stays open (its market's matcher
    not running, or slow) had its cancel published on every one of them."""
    store, cancels, orders = sweeping(clock)
    expires_at = clock() - timedelta(seconds=1)
    assert await store.add(pending_sell("gtt", clock, status=Status.OPEN, expires_at=expires_at))
    assert await orders.expire(GRACE) == 1
    for _ in range(5):
        clock.advance(5)  # a sweep every few seconds
        assert await orders.expire(GRACE) == 0
    clock.advance(6)  # past the period since it was sent
    assert await orders.expire(GRACE) == 1
    assert cancels.order_ids == ["gtt", "gtt"]
