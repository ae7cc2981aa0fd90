"""The review queue: approve credits exactly once (also when admins race or an approval is
retried after a crash), dismiss credits nothing and never closes an item whose approval is under
way, and nobody approves their own deposit. The items of a payment not tied to its order credit
that payment in total what it paid, once, however many items it has."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from ipn_gateway.adapters.memory import (
    MemoryDepositOrders,
    MemoryIpnLog,
    MemoryPayments,
    MemoryReviews,
    RecordingPublisher,
)
from ipn_gateway.application.ipn import IpnHandler, IpnRequest, review_id_of
from ipn_gateway.application.records import (
    CreatedPayment,
    DepositOrder,
    Payment,
    ReviewItem,
    ReviewStatus,
)
from ipn_gateway.application.reviews import ReviewHandler
from ipn_gateway.domain.errors import Conflict, Forbidden, GatewayError, NotFound
from ipn_gateway.domain.js_json import JsonNumber, JsonValue, js_stringify
from ipn_gateway.domain.payments import ConfirmationPolicy, PaymentState, read_ipn
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
        self.handler = ReviewHandler(
            self.reviews, self.payments, self.publisher, lambda: NOW, self.orders
        )
        created = CreatedPayment("5077125051", "addr", "btc", "0.0015", "100", "usd")
        self.orders.orders["dep_a"] = DepositOrder(
            "dep_a", "alice", "btc", "100", "usd", NOW, created
        )

    async def send(
        self,
        status: str,
        outcome: str,
        payment_id: str = "5077125051",
        currency: str = "btc",
        order_id: str = "dep_a",
    ) -> str:
        content: dict[str, JsonValue] = {
            "payment_id": JsonNumber(payment_id),
            "payment_status": status,
            "pay_currency": "btc",
            "order_id": order_id,
            "actually_paid": JsonNumber(outcome),
            "outcome_amount": JsonNumber(outcome),
            "outcome_currency": currency,
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

    async def items_of(
        self, payment_id: str, status: ReviewStatus | None = None
    ) -> list[ReviewItem]:
        """The payment's items, smallest amount first."""
        found = [i for i in await self.handler.list(status) if i.payment_id == payment_id]
        return sorted(found, key=lambda i: i.cumulative or Decimal(0))


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


async def approve_dying_after_the_credit(world: World, admin_id: str, review_id: str) -> None:
    """An approval whose process stops right after its credit was saved and published."""
    real_mark = world.payments.mark_published

    async def mark_then_die(payment_id: str, command_id: str) -> None:
        await real_mark(payment_id, command_id)
        raise Died

    world.payments.mark_published = mark_then_die  # type: ignore[method-assign]
    try:
        with pytest.raises(Died):
            await world.handler.approve(admin_id, review_id)
    finally:
        world.payments.mark_published = real_mark  # type: ignore[method-assign]


async def test_an_approval_interrupted_after_the_credit_is_finished_by_another_admin() -> None:
    world = World()
    await world.send("partially_paid", "0.001")
    [item] = await world.handler.list("open")
    await approve_dying_after_the_credit(world, "ops1", item.review_id)
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
    # The credit is in the payment's outbox (marked published), with the item it approved.
    payment = await world.payments.get("5077125099")
    assert payment is not None
    assert [e.command.reference_id for e in payment.outbox if e.published] == [
        "nowpayments:5077125099"
    ]
    assert payment.state.approved_reviews == {item.review_id}
    assert await world.payments.unpublished(NOW.replace(year=2027), 10) == []


async def test_an_outcome_with_more_decimals_than_the_coin_is_approvable_rounded_down() -> None:
    """NOWPayments works its outcomes out in doubles after its fees. Before, such an item had no
    amount: approve answered nothing_to_credit, and no route could ever credit the deposit."""
    world = World()
    assert await world.send("finished", "0.000123456789") == "ignored"
    [item] = await world.handler.list("open")
    assert (item.reason, item.currency, item.cumulative) == (
        "amount_too_precise",
        "BTC",
        Decimal("0.00012345"),  # down to BTC's 8 places, never up
    )
    approved = await world.handler.approve("ops", item.review_id)
    assert approved.status == "approved"
    reference = f"nowpayments:5077125051:review:{item.review_id}"
    assert world.credits == [(reference, Decimal("0.00012345"))]
    with pytest.raises(Conflict):
        await world.handler.approve("ops", item.review_id)
    assert len(world.credits) == 1


async def test_a_refund_after_a_credit_is_an_alert_that_credits_nothing() -> None:
    """Before, the alert carried the refund's outcome: approving it credited the difference to
    the credit already made, on top of the refund NOWPayments sent back to the payer."""
    world = World()
    assert await world.send("finished", "0.001") == "credited"
    assert await world.send("refunded", "0.0012") == "ignored"
    [alert] = await world.handler.list("open")
    assert (alert.reason, alert.cumulative) == ("status_after_credit", None)
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops", alert.review_id)
    assert refused.value.code == "nothing_to_credit"
    assert world.credits == [("nowpayments:5077125051", Decimal("0.001"))]
    dismissed = await world.handler.dismiss("ops", alert.review_id, "refund seen on chain")
    assert dismissed.status == "dismissed"


@pytest.mark.parametrize("ended", ["refunded", "failed"])
async def test_no_item_of_a_payment_that_ended_unpaid_credits(ended: str) -> None:
    """A partial payment held for review, then refunded or failed: its coins went back or never
    came. Before, approving the item still credited them."""
    world = World()
    assert await world.send("partially_paid", "0.001") == "ignored"
    [item] = await world.handler.list("open")
    assert await world.send(ended, "0.001") == "ignored"
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops", item.review_id)
    assert refused.value.code == "payment_ended"
    assert world.credits == []
    [still] = await world.handler.list("open")  # open again, to be dismissed
    assert still.review_id == item.review_id
    assert (await world.handler.dismiss("ops", item.review_id, "refunded")).status == "dismissed"


async def test_no_item_of_a_payment_not_tied_to_its_order_credits_once_it_was_refunded() -> None:
    """Such a payment keeps no state: its items are all it reported. Before, its refund was not
    seen at approval, and both its partial payment's item and the refund's own credited."""
    world = World()
    assert await world.send("partially_paid", "0.001", payment_id=UNBOUND) == "unmatched"
    assert await world.send("refunded", "0.001", payment_id=UNBOUND) == "unmatched"
    partial, refund = sorted(
        await world.items_of(UNBOUND, "open"), key=lambda item: item.payment_status
    )
    assert (partial.payment_status, refund.payment_status) == ("partially_paid", "refunded")
    assert refund.cumulative is None  # a refund reports nothing to credit
    with pytest.raises(Conflict) as ended:
        await world.handler.approve("ops", partial.review_id)
    assert ended.value.code == "payment_ended"
    with pytest.raises(Conflict) as nothing:
        await world.handler.approve("ops", refund.review_id)
    assert nothing.value.code == "nothing_to_credit"
    assert world.credits == []


@pytest.mark.parametrize("bound", [True, False], ids=["bound", "not-tied"])
async def test_an_approval_that_credited_before_a_refund_arrived_is_finished(bound: bool) -> None:
    """An approval stopped after its credit, then NOWPayments refunded the payment. Finishing it
    was refused payment_ended and the item went back to open, to be dismissed although its credit
    went out; it is approved, and nothing more is credited."""
    world = World()
    payment_id = "5077125051" if bound else UNBOUND
    await world.send("partially_paid", "0.001", payment_id=payment_id)
    [item] = await world.items_of(payment_id, "open")
    await approve_dying_after_the_credit(world, "ops1", item.review_id)
    assert len(world.credits) == 1
    await world.send("refunded", "0.001", payment_id=payment_id)
    finished = await world.handler.approve("ops2", item.review_id)
    assert finished.status == "approved"
    assert len(world.credits) == 1
    with pytest.raises(Conflict):
        await world.handler.dismiss("ops2", item.review_id, "refunded")


async def an_earlier_versions_item_credits_nothing(world: World, item: ReviewItem) -> None:
    """An item an earlier version queued with an amount it must not credit: refused while open,
    and, left `approving` (claimed, nothing credited yet), refused again and back to open, to
    be dismissed instead of staying approving for good."""
    credits = list(world.credits)
    await world.reviews.add(item)
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops", item.review_id)
    assert refused.value.code == "nothing_to_credit"
    await world.reviews.claim(item.review_id, "ops", NOW)
    with pytest.raises(Conflict) as again:
        await world.handler.approve("ops", item.review_id)
    assert again.value.code == "nothing_to_credit"
    assert (await world.handler.dismiss("ops", item.review_id, "seen")).status == "dismissed"
    assert world.credits == credits


async def test_an_alert_queued_with_an_amount_by_an_earlier_version_credits_nothing() -> None:
    world = World()
    assert await world.send("finished", "0.001") == "credited"
    alert = ReviewItem(
        review_id="rv_old_alert",
        reason="status_after_credit",
        detail="refunded after 0.001 was credited",
        order_id="dep_a",
        payment_id="5077125051",
        payment_status="refunded",
        user_id="alice",
        bound=True,
        currency="BTC",
        cumulative=Decimal("0.0012"),
        created_at=NOW,
    )
    await an_earlier_versions_item_credits_nothing(world, alert)
    assert world.credits == [("nowpayments:5077125051", Decimal("0.001"))]


async def test_an_items_id_is_what_the_ipn_reported_not_what_approving_credits() -> None:
    """The id an earlier version gave an over-precise outcome's item (no amount): the same IPN
    sent again after the upgrade queues no second item beside it."""
    world = World()
    assert await world.send("finished", "0.000123456789") == "ignored"
    [item] = await world.handler.list("open")
    assert item.cumulative == Decimal("0.00012345")
    reported = read_ipn(
        {
            "payment_id": JsonNumber("5077125051"),
            "payment_status": "finished",
            "pay_currency": "btc",
            "order_id": "dep_a",
            "actually_paid": JsonNumber("0.000123456789"),
            "outcome_amount": JsonNumber("0.000123456789"),
            "outcome_currency": "btc",
        }
    )
    assert item.review_id == review_id_of(reported, item.reason, item.detail, None)


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


# A payment NOWPayments made for dep_a that the gateway never recorded (it stopped in between):
# its IPNs name dep_a but not the payment stored for it, so each is a review item, not bound.
UNBOUND = "5077125098"


def settle(wallet: Any, world: World) -> list[str]:
    """The wallet (the `fake_wallet` of conftest) applies every command published so far: each
    one's status (a reference taken with another amount is `rejected`, idempotency_conflict)."""
    return [wallet.apply(command).status for command in world.publisher.published]


async def paid_in_two(world: World) -> tuple[ReviewItem, ReviewItem]:
    """The unbound payment is reported partially paid (0.001), then finished (0.0015): its two
    open items, the partial one first."""
    assert await world.send("partially_paid", "0.001", payment_id=UNBOUND) == "unmatched"
    assert await world.send("finished", "0.0015", payment_id=UNBOUND) == "unmatched"
    partial, finished = await world.items_of(UNBOUND, "open")
    return partial, finished


async def test_two_items_of_one_unbound_payment_credit_what_it_paid_once(
    fake_wallet: Any,
) -> None:
    world = World()
    partial, finished = await paid_in_two(world)
    assert (partial.bound, partial.cumulative, finished.cumulative) == (
        False,
        Decimal("0.001"),
        Decimal("0.0015"),
    )
    await world.handler.approve("ops1", partial.review_id)
    approved = await world.handler.approve("ops2", finished.review_id)
    assert (approved.status, approved.decided_by) == ("approved", "ops2")
    # The first approval credits its amount; the later one only what the payment paid on top.
    assert world.credits == [
        (f"nowpayments:{UNBOUND}", Decimal("0.001")),
        (f"nowpayments:{UNBOUND}:topup:0.0015", Decimal("0.0005")),
    ]
    assert {(c.user_id, c.currency) for c in world.publisher.published} == {("alice", "BTC")}
    assert settle(fake_wallet, world) == ["applied", "applied"]
    assert fake_wallet.balance("alice", "BTC") == (Decimal("0.0015"), Decimal(0))
    assert [i.status for i in await world.items_of(UNBOUND)] == ["approved", "approved"]


async def test_an_unbound_item_whose_amount_was_credited_already_is_refused_and_stays_open(
    fake_wallet: Any,
) -> None:
    world = World()
    partial, finished = await paid_in_two(world)
    await world.handler.approve("ops1", finished.review_id)
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops2", partial.review_id)
    assert refused.value.code == "already_credited"
    assert world.credits == [(f"nowpayments:{UNBOUND}", Decimal("0.0015"))]
    [still] = await world.items_of(UNBOUND, "open")
    assert (still.review_id, still.decided_by) == (partial.review_id, None)
    dismissed = await world.handler.dismiss("ops2", partial.review_id, "part of the 0.0015")
    assert dismissed.status == "dismissed"
    assert settle(fake_wallet, world) == ["applied"]
    assert fake_wallet.balance("alice", "BTC") == (Decimal("0.0015"), Decimal(0))


async def test_an_unbound_item_in_another_currency_than_its_payments_credit_is_refused() -> None:
    world = World()
    await world.send("partially_paid", "0.001", payment_id=UNBOUND)
    [partial] = await world.items_of(UNBOUND)
    await world.handler.approve("ops1", partial.review_id)
    await world.send("finished", "100", payment_id=UNBOUND, currency="usdt")
    [converted] = await world.items_of(UNBOUND, "open")
    assert (converted.currency, converted.cumulative) == ("USDT", Decimal("100"))
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops2", converted.review_id)
    assert refused.value.code == "outcome_currency_changed"
    assert [i.review_id for i in await world.items_of(UNBOUND, "open")] == [converted.review_id]
    assert world.credits == [(f"nowpayments:{UNBOUND}", Decimal("0.001"))]


async def test_two_admins_approving_two_items_of_one_unbound_payment_at_once_credit_it_once(
    fake_wallet: Any,
) -> None:
    world = World()
    partial, finished = await paid_in_two(world)
    # Both approvals read the payment before either writes: both see nothing credited yet.
    both_read = asyncio.Barrier(2)
    reads = 0
    real_get = world.payments.get

    async def get_together(payment_id: str) -> Payment | None:
        nonlocal reads
        found = await real_get(payment_id)
        reads += 1
        if reads <= 2:
            await both_read.wait()
        return found

    world.payments.get = get_together  # type: ignore[method-assign]
    outcomes = await asyncio.gather(
        world.handler.approve("ops1", partial.review_id),
        world.handler.approve("ops2", finished.review_id),
        return_exceptions=True,
    )
    assert reads == 3  # the approval whose write lost read the payment again
    refusals = [o.code for o in outcomes if isinstance(o, Conflict)]
    assert all(isinstance(o, ReviewItem | Conflict) for o in outcomes), outcomes
    assert refusals in ([], ["already_credited"])
    references = [reference for reference, _ in world.credits]
    assert references[0] == f"nowpayments:{UNBOUND}"  # one first credit
    assert references[1:] in ([], [f"nowpayments:{UNBOUND}:topup:0.0015"])
    assert sum(amount for _, amount in world.credits) == Decimal("0.0015")
    assert set(settle(fake_wallet, world)) == {"applied"}
    assert fake_wallet.balance("alice", "BTC") == (Decimal("0.0015"), Decimal(0))


async def test_an_unbound_ipn_sent_again_queues_and_credits_nothing_more_and_a_new_amount_does(
    fake_wallet: Any,
) -> None:
    world = World()
    for _ in range(2):
        assert await world.send("partially_paid", "0.001", payment_id=UNBOUND) == "unmatched"
    [first] = await world.items_of(UNBOUND)
    # The payer sends more while the payment is still partially paid: a new amount is reported.
    await world.send("partially_paid", "0.0012", payment_id=UNBOUND)
    open_items = await world.items_of(UNBOUND, "open")
    assert [i.cumulative for i in open_items] == [Decimal("0.001"), Decimal("0.0012")]
    assert open_items[0].review_id == first.review_id
    await world.handler.approve("ops1", first.review_id)
    for _ in range(2):  # redelivered after the approval
        await world.send("partially_paid", "0.001", payment_id=UNBOUND)
        await world.send("partially_paid", "0.0012", payment_id=UNBOUND)
    assert len(await world.items_of(UNBOUND)) == 2
    await world.handler.approve("ops1", open_items[1].review_id)
    with pytest.raises(Conflict):
        await world.handler.approve("ops2", first.review_id)
    assert world.credits == [
        (f"nowpayments:{UNBOUND}", Decimal("0.001")),
        (f"nowpayments:{UNBOUND}:topup:0.0012", Decimal("0.0002")),
    ]
    assert settle(fake_wallet, world) == ["applied", "applied"]
    assert fake_wallet.balance("alice", "BTC") == (Decimal("0.0012"), Decimal(0))


async def test_an_unbound_approval_interrupted_after_the_credit_is_finished_later() -> None:
    world = World()
    await world.send("finished", "0.0015", payment_id=UNBOUND)
    [item] = await world.items_of(UNBOUND)
    await approve_dying_after_the_credit(world, "ops1", item.review_id)
    [left] = await world.items_of(UNBOUND, "approving")
    assert left.decided_by == "ops1"
    approved = await world.handler.approve("ops2", item.review_id)
    assert (approved.status, approved.decided_by) == ("approved", "ops1")
    assert world.credits == [(f"nowpayments:{UNBOUND}", Decimal("0.0015"))]


# Bob's payment, recorded on his order dep_b.
BOBS = "5077125077"


def with_bobs_order(world: World) -> None:
    created = CreatedPayment(BOBS, "addr-b", "btc", "0.0015", "100", "usd")
    world.orders.orders["dep_b"] = DepositOrder("dep_b", "bob", "btc", "100", "usd", NOW, created)


async def test_an_item_pairing_an_order_with_another_orders_payment_credits_none_of_it(
    fake_wallet: Any,
) -> None:
    world = World()
    with_bobs_order(world)
    world.ipn.policy = replace(world.ipn.policy, credit_partially_paid=True)
    assert await world.send("partially_paid", "0.001", BOBS, order_id="dep_b") == "credited"
    # An IPN naming Alice's order and Bob's payment is queued for Alice; approving it is refused
    # (before a credit of Bob's or after one alike) and leaves it open to dismiss.
    assert await world.send("finished", "0.0015", BOBS) == "unmatched"
    [item] = await world.items_of(BOBS, "open")
    assert (item.user_id, item.bound, item.reason) == ("alice", False, "payment_id_mismatch")
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops", item.review_id)
    assert refused.value.code == "payment_of_another_order"
    assert [i.status for i in await world.items_of(BOBS)] == ["open"]
    # Bob's own finished IPN tops his payment up: all of it is his.
    assert await world.send("finished", "0.0015", BOBS, order_id="dep_b") == "credited"
    assert settle(fake_wallet, world) == ["applied", "applied"]
    assert fake_wallet.balance("bob", "BTC") == (Decimal("0.0015"), Decimal(0))
    assert fake_wallet.balance("alice", "BTC") == (Decimal(0), Decimal(0))


async def test_another_orders_payment_is_refused_before_its_own_order_saw_an_ipn(
    fake_wallet: Any,
) -> None:
    world = World()
    with_bobs_order(world)
    assert await world.send("finished", "0.0015", BOBS) == "unmatched"
    [item] = await world.items_of(BOBS, "open")
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops", item.review_id)
    assert refused.value.code == "payment_of_another_order"
    assert await world.payments.get(BOBS) is None  # nothing stored for Alice on Bob's payment
    assert await world.send("finished", "0.0015", BOBS, order_id="dep_b") == "credited"
    assert settle(fake_wallet, world) == ["applied"]
    assert fake_wallet.balance("bob", "BTC") == (Decimal("0.0015"), Decimal(0))


async def test_an_ipn_of_a_payment_stored_for_another_order_is_held_for_review(
    fake_wallet: Any,
) -> None:
    world = World()
    with_bobs_order(world)
    # The payment's document belongs to another order (as an earlier approval could store it).
    stored = await world.payments.save(
        PaymentState(payment_id=BOBS),
        order_id="dep_x",
        user_id="xena",
        expected_version=None,
        credit=None,
        review=None,
        now=NOW,
    )
    assert stored
    assert await world.send("finished", "0.0015", BOBS, order_id="dep_b") == "unmatched"
    [item] = await world.items_of(BOBS, "open")
    assert (item.user_id, item.reason, item.bound) == ("bob", "payment_of_another_order", False)
    assert world.credits == []


async def test_an_item_whose_credit_cannot_be_built_is_refused_and_can_be_dismissed() -> None:
    """An item for a user id an earlier version stored with a space: its credit cannot be built.
    Approving it failed with a 500 and left it `approving`, which no dismissal may close, for
    good. It is refused with 409 `review_unsendable` before anything moves, logged, and goes back
    to open, so an admin can dismiss it."""
    world = World()
    world.orders.orders["dep_a"] = replace(world.orders.orders["dep_a"], user_id="old alice")
    assert await world.send("partially_paid", "0.001") == "ignored"
    [item] = await world.items_of("5077125051")
    with capture_logs() as logs, pytest.raises(Conflict) as refused:
        await world.handler.approve("ops1", item.review_id)
    assert refused.value.code == "review_unsendable"
    assert world.credits == []
    assert (await world.handler.reviews.get(item.review_id)) == item
    [logged] = [e for e in logs if e["event"] == "review.credit_unsendable"]
    assert (logged["review_id"], logged["by"], logged["log_level"]) == (
        item.review_id,
        "ops1",
        "error",
    )
    assert logged["reason"].startswith("invalid_field: user_id")
    dismissed = await world.handler.dismiss("ops1", item.review_id, "a user id no wallet takes")
    assert dismissed.status == "dismissed"


@pytest.mark.parametrize("early", ["waiting", "confirming"])
async def test_an_item_of_an_estimate_credits_nothing_and_what_arrived_credits_once(
    early: str,
) -> None:
    """NOWPayments sends `waiting` with the outcome the whole payment would bring (nothing has
    arrived) and `confirming` before any confirmation; a payment not tied to its order queues
    both for review. Before, approving it credited that estimate: the full amount for a payer who
    then sent a part, or for a payment that expired unpaid."""
    world = World()
    assert await world.send(early, "0.0015", payment_id=UNBOUND) == "unmatched"
    assert await world.send("partially_paid", "0.001", payment_id=UNBOUND) == "unmatched"
    estimate, partial = sorted(
        await world.items_of(UNBOUND, "open"), key=lambda item: item.payment_status != early
    )
    assert (estimate.payment_status, estimate.cumulative) == (early, None)
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops", estimate.review_id)
    assert refused.value.code == "nothing_to_credit"
    await world.handler.approve("ops", partial.review_id)
    assert world.credits == [(f"nowpayments:{UNBOUND}", Decimal("0.001"))]


async def test_a_waiting_item_of_a_payment_that_expired_unpaid_credits_nothing() -> None:
    world = World()
    assert await world.send("waiting", "0.0015", payment_id=UNBOUND) == "unmatched"
    assert await world.send("expired", "0.0015", payment_id=UNBOUND) == "unmatched"
    for item in await world.items_of(UNBOUND, "open"):
        with pytest.raises(Conflict):
            await world.handler.approve("ops", item.review_id)
    assert world.credits == []


async def test_a_waiting_ipn_that_overtook_the_payments_record_tops_nothing_up() -> None:
    """`waiting` arrived before create-deposit recorded its payment: held for review. The
    payment's later IPNs credit what arrived; the stale item must not raise it to the estimate."""
    world = World()
    world.orders.orders["dep_b"] = DepositOrder("dep_b", "bob", "btc", "100", "usd", NOW)
    assert await world.send("waiting", "0.00153846", UNBOUND, order_id="dep_b") == "unmatched"
    await world.orders.attach_payment(
        "dep_b", CreatedPayment(UNBOUND, "addr", "btc", "0.00153846", "100", "usd")
    )
    assert await world.send("finished", "0.0014", UNBOUND, order_id="dep_b") == "credited"
    [stale] = await world.items_of(UNBOUND, "open")
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops", stale.review_id)
    assert refused.value.code == "nothing_to_credit"
    assert world.credits == [(f"nowpayments:{UNBOUND}", Decimal("0.0014"))]


@pytest.mark.parametrize("early", ["waiting", "confirming"])
async def test_an_estimate_queued_with_an_amount_by_an_earlier_version_credits_nothing(
    early: str,
) -> None:
    world = World()
    estimate = ReviewItem(
        review_id=f"rv_old_{early}",
        reason="payment_not_recorded",
        detail="no order holds this payment",
        order_id="dep_a",
        payment_id=UNBOUND,
        payment_status=early,
        user_id="alice",
        bound=False,
        currency="BTC",
        cumulative=Decimal("0.0015"),
        created_at=NOW,
    )
    await an_earlier_versions_item_credits_nothing(world, estimate)
    assert world.credits == []


@pytest.mark.parametrize("late", ["finished", "partially_paid", "confirmed"])
async def test_funds_reported_after_a_payment_expired_are_an_alert_that_credits_nothing(
    late: str,
) -> None:
    """Before, such an IPN was answered `ignored` and nothing else: had NOWPayments completed a
    late payment after all, its coins arrived and nobody was told."""
    world = World()
    assert await world.send("expired", "0") == "ignored"
    assert await world.handler.list("open") == []
    assert await world.send(late, "0.0015") == "ignored"
    [alert] = await world.handler.list("open")
    assert (alert.reason, alert.cumulative, alert.payment_status) == (
        "status_after_end",
        None,
        late,
    )
    assert alert.detail == f"{late} after the payment was expired"
    with pytest.raises(Conflict) as refused:
        await world.handler.approve("ops", alert.review_id)
    assert refused.value.code == "nothing_to_credit"
    assert world.credits == []
    # The same IPN again is the same item; a waiting one after the end is no alert.
    assert await world.send(late, "0.0015") == "ignored"
    assert await world.send("waiting", "0.0015") == "ignored"
    assert [i.review_id for i in await world.handler.list("open")] == [alert.review_id]
