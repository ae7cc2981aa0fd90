"""The review queue: approve credits exactly once (also when admins race or an approval is
retried after a crash), dismiss credits nothing and never closes an item whose approval is under
way, and nobody approves their own deposit."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ipn_gateway.adapters.memory import (
    MemoryDepositOrders,
    MemoryIpnLog,
    MemoryPayments,
    MemoryReviews,
    RecordingPublisher,
)
from ipn_gateway.application.ipn import IpnHandler, IpnRequest
from ipn_gateway.application.records import CreatedPayment, DepositOrder, Payment, ReviewItem
from ipn_gateway.application.reviews import ReviewHandler
from ipn_gateway.domain.errors import Conflict, Forbidden, GatewayError, NotFound
from ipn_gateway.domain.js_json import JsonNumber, JsonValue, js_stringify
from ipn_gateway.domain.payments import ConfirmationPolicy
from ipn_gateway.domain.signature import sign
from shared.messaging import CreditCommand

SECRET = "review-ipn-secret"
NOW = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


class World:
    def __init__(self) -> None:
        self.orders = MemoryDepositOrders()
        self.payments = MemoryPayments()
        self.reviews = MemoryReviews()
        self.publisher = RecordingPublisher()
        self.ipn = IpnHandler(
            secret=SECRET,
            policy=ConfirmationPolicy(),
            orders=self.orders,
            payments=self.payments,
            ipn_log=MemoryIpnLog(),
            publisher=self.publisher,
            clock=lambda: NOW,
            reviews=self.reviews,
        )
        self.handler = ReviewHandler(self.reviews, self.payments, self.publisher, lambda: NOW)
        created = CreatedPayment("5077125051", "addr", "btc", "0.0015", "100", "usd")
        self.orders.orders["dep_a"] = DepositOrder(
            "dep_a", "alice", "btc", "100", "usd", NOW, created
        )

    async def send(self, status: str, outcome: str, payment_id: str = "5077125051") -> str:
        content: dict[str, JsonValue] = {
            "payment_id": JsonNumber(payment_id),
            "payment_status": status,
            "pay_currency": "btc",
            "order_id": "dep_a",
            "actually_paid": JsonNumber(outcome),
            "outcome_amount": JsonNumber(outcome),
            "outcome_currency": "btc",
        }
        signature = sign(content, SECRET)
        raw = js_stringify(content).encode()
        return await self.ipn.handle(IpnRequest(raw, signature, {}, "10.0.0.1"))

    @property
    def credits(self) -> list[tuple[str, Decimal]]:
        return [
            (c.reference_id, c.amount)
            for c in self.publisher.published
            if isinstance(c, CreditCommand)
        ]


async def test_approving_a_partially_paid_payment_credits_once_and_finished_only_tops_up() -> None:
    world = World()
    assert await world.send("partially_paid", "0.001") == "ignored"
    [item] = await world.handler.list("open")
    assert (item.reason, item.cumulative) == ("partially_paid_not_credited", Decimal("0.001"))
    with pytest.raises(Forbidden):
        await world.handler.approve("alice", item.review_id)  # her own deposit
    # Two admins approve at once: one credit.
    first, second = await asyncio.gather(
        world.handler.approve("ops1", item.review_id),
        world.handler.approve("ops2", item.review_id),
        return_exceptions=True,
    )
    outcomes = sorted(type(r).__name__ for r in (first, second))
    assert outcomes == ["Conflict", "ReviewItem"]
    review_reference = f"nowpayments:5077125051:review:{item.review_id}"
    assert world.credits == [(review_reference, Decimal("0.001"))]
    # The payer sends the rest: only the difference is credited.
    assert await world.send("finished", "0.0015") == "credited"
    assert world.credits[1:] == [("nowpayments:5077125051:topup:0.0015", Decimal("0.0005"))]
    with pytest.raises(Conflict):
        await world.handler.approve("ops1", item.review_id)


class Died(BaseException):
    """The process stopped here (nothing in it catches this)."""


async def crash(*args: object, **kwargs: object) -> None:
    raise Died


async def test_an_approval_interrupted_after_the_credit_is_finished_by_another_admin() -> None:
    world = World()
    await world.send("partially_paid", "0.001")
    [item] = await world.handler.list("open")
    real_mark = world.payments.mark_published

    async def mark_then_die(payment_id: str, command_id: str) -> None:
        await real_mark(payment_id, command_id)
        raise Died

    world.payments.mark_published = mark_then_die  # type: ignore[method-assign]
    with pytest.raises(Died):
        await world.handler.approve("ops1", item.review_id)
    world.payments.mark_published = real_mark  # type: ignore[method-assign]
    assert len(world.credits) == 1  # credited, but the item is not approved yet
    [left] = await world.handler.list("approving")
    assert (left.review_id, left.decided_by, left.decided_at) == (item.review_id, "ops1", NOW)
    with pytest.raises(Conflict) as refused:
        await world.handler.dismiss("ops2", item.review_id, "fraud, do not credit")
    assert refused.value.code == "review_closed"
    with pytest.raises(Forbidden):
        await world.handler.approve("alice", item.review_id)  # not even to finish it
    approved = await world.handler.approve("ops2", item.review_id)
    assert (approved.status, approved.decided_by) == ("approved", "ops1")  # who decided
    assert len(world.credits) == 1
    with pytest.raises(Conflict):
        await world.handler.approve("ops2", item.review_id)


async def test_an_approval_interrupted_before_the_credit_is_finished_by_approving_again() -> None:
    world = World()
    await world.send("partially_paid", "0.001")
    [item] = await world.handler.list("open")
    real_get = world.payments.get
    world.payments.get = crash  # type: ignore[method-assign]
    with pytest.raises(Died):
        await world.handler.approve("ops1", item.review_id)
    world.payments.get = real_get  # type: ignore[method-assign]
    assert world.credits == []
    stored = await world.reviews.get(item.review_id)
    assert stored is not None
    assert (stored.status, stored.decided_by) == ("approving", "ops1")
    with pytest.raises(Conflict):
        await world.handler.dismiss("ops2", item.review_id, "fraud, do not credit")
    approved = await world.handler.approve("ops1", item.review_id)  # the same admin retries
    assert approved.status == "approved"
    review_reference = f"nowpayments:5077125051:review:{item.review_id}"
    assert world.credits == [(review_reference, Decimal("0.001"))]


async def test_a_dismiss_while_an_approval_credits_is_refused() -> None:
    world = World()
    await world.send("partially_paid", "0.001")
    [item] = await world.handler.list("open")
    crediting, resume = asyncio.Event(), asyncio.Event()
    real_get = world.payments.get

    async def paused_get(payment_id: str) -> Payment | None:
        crediting.set()
        await resume.wait()  # the payment's round trip, with another admin acting meanwhile
        return await real_get(payment_id)

    world.payments.get = paused_get  # type: ignore[method-assign]
    approval = asyncio.create_task(world.handler.approve("ops1", item.review_id))
    await crediting.wait()
    with pytest.raises(Conflict) as refused:
        await world.handler.dismiss("ops2", item.review_id, "fraud, do not credit")
    assert refused.value.code == "review_closed"
    resume.set()
    approved = await approval
    assert approved.status == "approved"
    stored = await world.reviews.get(item.review_id)
    assert stored is not None
    assert (stored.status, stored.note) == ("approved", None)
    review_reference = f"nowpayments:5077125051:review:{item.review_id}"
    assert world.credits == [(review_reference, Decimal("0.001"))]


async def test_an_approval_that_read_the_item_before_a_dismiss_credits_nothing() -> None:
    world = World()
    await world.send("partially_paid", "0.001")
    [item] = await world.handler.list("open")
    read, resume = asyncio.Event(), asyncio.Event()
    real_get = world.reviews.get

    async def paused_get(review_id: str) -> ReviewItem | None:
        found = await real_get(review_id)
        if not read.is_set():  # the approval's read: it saw the item open
            read.set()
            await resume.wait()
        return found

    world.reviews.get = paused_get  # type: ignore[method-assign]
    approval = asyncio.create_task(world.handler.approve("ops1", item.review_id))
    await read.wait()
    dismissed = await world.handler.dismiss("ops2", item.review_id, "fraud, do not credit")
    assert dismissed.status == "dismissed"
    resume.set()
    with pytest.raises(Conflict) as refused:
        await approval
    assert refused.value.code == "review_closed"
    assert world.credits == []
    payment = await world.payments.get("5077125051")
    assert payment is not None
    assert payment.state.approved_reviews == frozenset()
    stored = await real_get(item.review_id)
    assert stored is not None
    assert (stored.status, stored.decided_by) == ("dismissed", "ops2")


async def test_an_approval_that_cannot_credit_leaves_the_item_open_to_dismiss() -> None:
    world = World()
    await world.send("partially_paid", "0.001")
    [item] = await world.handler.list("open")
    payment = world.payments.payments["5077125051"]
    credited_in_eth = replace(payment.state, credit_currency="ETH")
    world.payments.payments["5077125051"] = replace(payment, state=credited_in_eth)
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops1", item.review_id)
    assert refused.value.code == "outcome_currency_changed"
    [still] = await world.handler.list("open")
    assert (still.review_id, still.decided_by, still.decided_at) == (item.review_id, None, None)
    dismissed = await world.handler.dismiss("ops2", item.review_id, "paid in another coin")
    assert dismissed.status == "dismissed"
    assert world.credits == []


async def test_a_mismatched_payment_approved_credits_the_order_owner_once() -> None:
    world = World()
    assert await world.send("finished", "0.002", payment_id="5077125099") == "unmatched"
    assert world.credits == []
    [item] = await world.handler.list("open")
    assert (item.reason, item.bound) == ("payment_id_mismatch", False)
    approved = await world.handler.approve("ops", item.review_id)
    assert (approved.status, approved.decided_by) == ("approved", "ops")
    assert world.credits == [("nowpayments:5077125099", Decimal("0.002"))]
    [command] = world.publisher.published
    assert command.user_id == "alice"
    assert await world.reviews.unpublished(NOW.replace(year=2027)) == []  # marked published


async def test_dismiss_credits_nothing_and_needs_a_reason() -> None:
    world = World()
    await world.send("finished", "0.000000001")  # more decimals than BTC has
    [item] = await world.handler.list("open")
    assert item.reason == "amount_too_precise"
    with pytest.raises(GatewayError):
        await world.handler.dismiss("ops", item.review_id, "  ")
    dismissed = await world.handler.dismiss("ops", item.review_id, "asked the payer")
    assert (dismissed.status, dismissed.note) == ("dismissed", "asked the payer")
    with pytest.raises(Conflict):
        await world.handler.approve("ops", item.review_id)
    with pytest.raises(NotFound):
        await world.handler.approve("ops", "rv_missing")
    assert world.credits == []
    assert await world.handler.list("open") == []
