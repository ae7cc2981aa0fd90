"""What the wallet's answers to an order's lock do to it, over the real (embedded) MongoDB: applied
(also as a duplicate) sends it to its market's matcher once it is pending, refused (also as a
duplicate of a refusal) fails it with the wallet's reason, and a lock never answered is sent again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging import CommandResult
from trading.errors import Invalid
from trading.messaging import EventPublisher
from trading.spot.adapters.mongo import MongoSpotStore
from trading.spot.domain.book import OrderType, Side, Status
from trading.spot.domain.markets import Fees, Market
from trading.spot.messages import decode
from trading.spot.orders import SpotBatch, SpotOrder
from trading.spot.service import SpotOrders
from trading.spot.wallet import SpotWallet

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Published(EventPublisher):
    def __init__(self) -> None:
        self.messages: list[tuple[str, str, bytes]] = []

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        self.messages.append((topic, key, value))


class Locks(SpotWallet):
    def __init__(self) -> None:
        self.locked: list[str] = []

    async def lock(self, order: SpotOrder) -> None:
        self.locked.append(order.order_id)

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        raise AssertionError("not the API's job")


def result(order_id: str, status: str, **more: Any) -> CommandResult:
    return CommandResult.model_validate(
        {
            "command_id": "c",
            "type": "lock",
            "transaction_type": "spot_order",
            "reference_id": f"{order_id}:lock",
            "user_id": "amy",
            "status": status,
            **more,
        }
    )


async def test_lock_answers_move_pending_orders(
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    clock, published, locks = Clock(), Published(), Locks()
    store = MongoSpotStore(mongo_database)
    await store.ensure_indexes()
    orders = SpotOrders(
        store, locks, published, "t.trading.orders", Fees.of("0.001", "0.002"), clock
    )
    placed = [
        await orders.place(
            "amy",
            pair="ETH-BTC",
            side=Side.SELL,
            type=OrderType.LIMIT,
            amount="0.5",
            price="0.05000",
            quote_amount=None,
        )
        for _ in range(4)
    ]
    assert [o.status for o in placed] == [Status.PENDING] * 4
    assert locks.locked == [o.order_id for o in placed]
    assert placed[0].lock_amount == Decimal("0.5")
    applied, duplicate, refused, refused_again = (o.order_id for o in placed)

    await orders.apply_result(result(applied, "applied"))
    await orders.apply_result(result(duplicate, "duplicate", original_status="applied"))
    assert [
        (topic, key, decode(value).kind, decode(value).order_id)
        for topic, key, value in published.messages
    ] == [
        ("t.trading.orders", "ETH-BTC", "locked", applied),
        ("t.trading.orders", "ETH-BTC", "locked", duplicate),
    ]
    await orders.apply_result(result(refused, "rejected", reason="insufficient_funds"))
    await orders.apply_result(
        result(refused_again, "duplicate", original_status="rejected", reason="insufficient_funds")
    )
    for order_id in (refused, refused_again):
        failed = await orders.get(order_id, "amy")
        assert (failed.status, failed.reason) == (Status.FAILED, "insufficient_funds")
    assert len(published.messages) == 2  # a refused lock sends nothing to the matcher

    # locks unanswered for long enough go again; failed orders do not
    clock.now = START + timedelta(seconds=31)
    locks.locked.clear()
    assert await orders.resend_locks(grace=timedelta(seconds=30)) == 2
    assert sorted(locks.locked) == sorted([applied, duplicate])
    clock.now = START + timedelta(seconds=10)
    assert await orders.resend_locks(grace=timedelta(seconds=30)) == 0


async def test_an_answer_to_another_users_lock_moves_no_order(
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    """A result under an order's lock reference that answers someone else's command (another
    producer's lock under the same reference) says nothing of the order's own lock."""
    clock, published, locks = Clock(), Published(), Locks()
    store = MongoSpotStore(mongo_database)
    await store.ensure_indexes()
    orders = SpotOrders(
        store, locks, published, "t.trading.orders", Fees.of("0.001", "0.002"), clock
    )
    placed = [
        await orders.place(
            "amy",
            pair="ETH-BTC",
            side=Side.SELL,
            type=OrderType.LIMIT,
            amount="0.5",
            price="0.05000",
            quote_amount=None,
        )
        for _ in range(2)
    ]
    refused, applied = (o.order_id for o in placed)

    await orders.apply_result(
        result(refused, "rejected", user_id="mallory", reason="idempotency_conflict")
    )
    await orders.apply_result(result(applied, "applied", user_id="mallory"))

    for order_id in (refused, applied):
        assert (await orders.get(order_id, "amy")).status is Status.PENDING
    assert published.messages == []  # nothing entered the book on someone else's lock

    # amy's own answers still count
    await orders.apply_result(result(applied, "applied"))
    assert [decode(value).order_id for _, _, value in published.messages] == [applied]


@pytest.mark.parametrize(
    ("fees", "smallest"),
    [
        (("0.001", "0.002"), "0.02"),
        (("0.6", "0.001"), "0.03"),  # the maker's rate counts: the seller rests, the buyer takes
        (("0.001", "0.6"), "0.02"),
        (("0", "0"), "0.01"),
    ],
)
async def test_a_market_buy_by_quote_amount_is_refused_only_when_no_fill_could_pay_its_fee(
    mongo_database: AsyncDatabase[dict[str, Any]], fees: tuple[str, str], smallest: str
) -> None:
    """Below the smallest quote whose seller's fee (rounded up) leaves something, it is refused
    at placement; from it on, it is locked and sent (it was always locked, then failed)."""
    clock, published, locks = Clock(), Published(), Locks()
    store = MongoSpotStore(mongo_database)
    orders = SpotOrders(store, locks, published, "t.trading.orders", Fees.of(*fees), clock)

    async def buy(quote_amount: str) -> SpotOrder:
        return await orders.place(
            "amy",
            pair="BTC-GBP",
            side=Side.BUY,
            type=OrderType.MARKET,
            amount=None,
            price=None,
            quote_amount=quote_amount,
        )

    below = Decimal(smallest) - Decimal("0.01")
    if below > 0:
        with pytest.raises(Invalid) as refused:
            await buy(str(below))
        assert refused.value.code == "order_too_small"
    placed = await buy(smallest)
    assert (placed.status, placed.lock_amount) == (Status.PENDING, Decimal(smallest))
    assert locks.locked == [placed.order_id]
