"""One contract for the gateway's stores, run against the in-memory adapters and MongoDB.

Every guarantee a handler relies on is checked on both: conditional saves, outboxes, the wallet's
answers kept beside the credit they answer, the repeat payments the poller asks about, review
items queued once and closed once (a claimed one only approved or released), withdrawal decisions
taken once and undone only for the decision the wallet refused, the withdrawals waiting on the
wallet's answer, paging. On MongoDB, a withdrawal an earlier version stored without `attempt` is
decided, reopened and decided again like any other.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from bson import Decimal128
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ipn_gateway.adapters.memory import (
    MemoryDepositOrders,
    MemoryPayments,
    MemoryReviews,
    MemoryWithdrawals,
    RecordingPublisher,
)
from ipn_gateway.adapters.mongo import (
    PAYMENTS,
    WITHDRAWALS,
    MongoDepositOrders,
    MongoPayments,
    MongoReviews,
    MongoWithdrawals,
    ensure_indexes,
    reopen_unrecorded_refusals,
)
from ipn_gateway.application.ports import DepositOrders, Payments, Reviews, Withdrawals
from ipn_gateway.application.records import (
    CreatedPayment,
    DepositOrder,
    OutboxEntry,
    ReviewItem,
    ReviewNote,
    Withdrawal,
)
from ipn_gateway.application.withdrawals import WithdrawalHandler
from ipn_gateway.domain.errors import Conflict
from ipn_gateway.domain.payments import PaymentState, PaymentStatus
from ipn_gateway.domain.withdrawals import WithdrawalPolicy, WithdrawalStatus, reference_id
from shared.messaging import (
    CommandResult,
    CreditCommand,
    LockCommand,
    ReleaseLockedCommand,
    UnlockCommand,
    WalletCommand,
)
from shared.testing.fixtures import unique_database_name

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Stores:
    orders: DepositOrders
    payments: Payments
    reviews: Reviews
    withdrawals: Withdrawals


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.integration)])
def database(request: pytest.FixtureRequest) -> AsyncDatabase[dict[str, Any]] | None:
    """None for the in-memory stores. Sync on purpose: MongoDB is pulled only by its variant."""
    if request.param == "memory":
        return None
    client: AsyncMongoClient[dict[str, Any]] = request.getfixturevalue("mongo_client")
    return client[unique_database_name(f"gw_{request.node.originalname}")]


@pytest_asyncio.fixture
async def stores(database: AsyncDatabase[dict[str, Any]] | None) -> AsyncIterator[Stores]:
    if database is None:
        yield Stores(MemoryDepositOrders(), MemoryPayments(), MemoryReviews(), MemoryWithdrawals())
        return
    await ensure_indexes(database)
    try:
        yield Stores(
            MongoDepositOrders(database),
            MongoPayments(database),
            MongoReviews(database),
            MongoWithdrawals(database),
        )
    finally:
        await database.client.drop_database(database.name)


def credit(reference: str, amount: str = "0.01") -> CreditCommand:
    return CreditCommand(
        user_id="alice",
        currency="BTC",
        amount=amount,
        transaction_type="deposit_nowpayments",
        reference_id=reference,
        issued_at=NOW,
    )


def result(
    reference: str,
    status: str,
    reason: str | None = None,
    *,
    command_id: str = "c",
    user_id: str = "alice",
) -> CommandResult:
    return CommandResult(
        command_id=command_id,
        type="credit",
        transaction_type="deposit_nowpayments",
        reference_id=reference,
        user_id=user_id,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        processed_at=NOW,
    )


async def test_payments_save_only_over_the_expected_version(stores: Stores) -> None:
    payments = stores.payments
    state = PaymentState(
        payment_id="501", status=PaymentStatus.WAITING, seen=frozenset({"waiting"})
    )
    saved = await payments.save(
        state,
        order_id="dep_1",
        user_id="alice",
        expected_version=None,
        credit=None,
        review=None,
        now=NOW,
    )
    assert saved
    again = await payments.save(
        state,
        order_id="dep_1",
        user_id="alice",
        expected_version=None,
        credit=None,
        review=None,
        now=NOW,
    )
    assert not again  # stored already
    finished = PaymentState(
        payment_id="501",
        status=PaymentStatus.FINISHED,
        seen=frozenset({"waiting", "finished"}),
        credited=Decimal("0.01"),
        credit_currency="BTC",
        credits=1,
        approved_reviews=frozenset({"rv_1"}),
    )
    entry = OutboxEntry(credit("nowpayments:501"), created_at=NOW)
    note = ReviewNote("something", "to look at", NOW)
    kwargs: dict[str, Any] = {"order_id": "x", "user_id": "mallory", "review": note, "now": NOW}
    assert await payments.save(finished, expected_version=0, credit=entry, **kwargs)
    assert not await payments.save(finished, expected_version=0, credit=None, **kwargs)
    stored = await payments.get("501")
    assert stored is not None
    assert stored.state == finished
    assert (stored.order_id, stored.user_id, stored.version) == ("dep_1", "alice", 1)
    assert [e.command.reference_id for e in stored.outbox] == ["nowpayments:501"]
    assert [n.code for n in stored.reviews] == ["something"]


async def test_payment_outbox_and_the_wallets_answers(stores: Stores) -> None:
    payments = stores.payments
    first = OutboxEntry(credit("nowpayments:502"), created_at=NOW)
    state = PaymentState(payment_id="502", status=PaymentStatus.FINISHED)
    await payments.save(
        state,
        order_id="dep_2",
        user_id="alice",
        expected_version=None,
        credit=first,
        review=None,
        now=NOW,
    )
    assert await payments.unpublished(NOW, 10) == []  # too young
    [pending] = await payments.unpublished(NOW + timedelta(seconds=1), 10)
    assert (pending.owner_id, pending.owner_created_at) == ("502", NOW)
    assert pending.build() == first.command  # sent again as recorded: same id and payload
    await payments.mark_published("502", first.command_id)
    assert await payments.unpublished(NOW + timedelta(seconds=1), 10) == []

    assert await payments.result_of("502", "nowpayments:502") is None
    # Results that only name the credit's reference answer none of its commands: no effect.
    await payments.record_result(result("nowpayments:502", "rejected", "x", command_id="other"))
    await payments.record_result(
        result("nowpayments:502", "rejected", "x", command_id=first.command_id, user_id="mallory")
    )
    await payments.record_result(result("nowpayments:999", "applied"))
    assert await payments.result_of("502", "nowpayments:502") is None
    answer = result("nowpayments:502", "rejected", "unknown_currency", command_id=first.command_id)
    await payments.record_result(answer)
    # A redelivery, or a resend's duplicate: the first answer stays, noted once.
    await payments.record_result(answer)
    await payments.record_result(
        result("nowpayments:502", "duplicate", command_id=first.command_id)
    )
    assert await payments.result_of("502", "nowpayments:502") == ("rejected", "unknown_currency")
    stored = await payments.get("502")
    assert stored is not None
    assert [(n.code, n.detail) for n in stored.reviews] == [
        ("credit_rejected", "nowpayments:502: unknown_currency")
    ]
    assert stored.outbox[0].published


async def test_a_credits_answer_is_its_first_final_one_a_duplicate_as_the_outcome_it_repeats(
    stores: Stores,
) -> None:
    """A `processing_failed` refusal is no answer (the wallet recorded none; the credit is asked
    about again); a resend's `duplicate` is kept as the outcome it carries."""
    payments = stores.payments
    for payment_id in ("511", "512"):
        entry = await unpublished_credit(payments, payment_id, NOW)
        await payments.mark_published(payment_id, entry.command_id)
        reference = f"nowpayments:{payment_id}"
        await payments.record_result(
            result(reference, "rejected", "processing_failed", command_id=entry.command_id)
        )
        assert await payments.result_of(payment_id, reference) is None
        repeated = result(reference, "duplicate", command_id=entry.command_id)
        original = "applied" if payment_id == "511" else "rejected"
        reason = None if original == "applied" else "unknown_currency"
        await payments.record_result(
            repeated.model_copy(update={"original_status": original, "reason": reason})
        )
        assert await payments.result_of(payment_id, reference) == (original, reason)
    refused = await payments.get("512")
    assert refused is not None
    assert [n.code for n in refused.reviews] == ["credit_rejected"]
    applied = await payments.get("511")
    assert applied is not None
    assert applied.reviews == ()


async def test_payments_awaiting_the_wallet_have_a_published_credit_it_has_not_answered(
    stores: Stores,
) -> None:
    """Published before the cutoff and unanswered, not asked about since the cutoff; oldest
    first. An unpublished credit is the outbox relay's; an answered one waits on nothing."""
    payments = stores.payments
    earlier = NOW - timedelta(minutes=1)
    names = ("pay_old", "pay_sent", "pay_unpublished", "pay_answered", "pay_asked", "pay_young")
    for name in names:
        at = {"pay_old": earlier, "pay_young": NOW + timedelta(minutes=2)}.get(name, NOW)
        entry = await unpublished_credit(payments, name, at)
        if name != "pay_unpublished":
            await payments.mark_published(name, entry.command_id)
        if name == "pay_answered":
            await payments.record_result(
                result(f"nowpayments:{name}", "applied", command_id=entry.command_id)
            )
    await payments.mark_asked("pay_asked", NOW + timedelta(minutes=2))
    cutoff = NOW + timedelta(minutes=1)

    waiting = await payments.awaiting_wallet(cutoff, 10)
    assert [p.state.payment_id for p in waiting] == ["pay_old", "pay_sent"]
    assert [p.state.payment_id for p in await payments.awaiting_wallet(cutoff, 1)] == ["pay_old"]
    assert [p.state.payment_id for p in await payments.awaiting_wallet(NOW, 10)] == ["pay_old"]
    later = await payments.awaiting_wallet(NOW + timedelta(minutes=3), 10)
    assert [p.state.payment_id for p in later] == ["pay_old", "pay_asked", "pay_sent", "pay_young"]
    # Asking changes nothing else: not the state, nor the version.
    asked = await payments.get("pay_asked")
    assert asked is not None
    assert (asked.asked_at, asked.version, asked.created_at) == (NOW + timedelta(minutes=2), 0, NOW)
    # A later IPN's save keeps when it was asked.
    assert await payments.save(
        asked.state,
        order_id="x",
        user_id="alice",
        expected_version=0,
        credit=None,
        review=None,
        now=NOW,
    )
    saved = await payments.get("pay_asked")
    assert saved is not None
    assert (saved.asked_at, saved.version) == (NOW + timedelta(minutes=2), 1)


async def test_payments_awaiting_the_wallet_come_oldest_first_a_page_after_another(
    stores: Stores,
) -> None:
    payments = stores.payments
    for payment_id, at in scattered("pay_"):
        entry = await unpublished_credit(payments, payment_id, at)
        await payments.mark_published(payment_id, entry.command_id)
    since = NOW + timedelta(seconds=3)  # pay_e's credit is younger
    pages = await pages_of_two(
        lambda limit, after: payments.awaiting_wallet(since, limit, after),
        lambda p: (p.created_at or NOW, p.state.payment_id),
    )
    assert pages == [["pay_b", "pay_a"], ["pay_c", "pay_d"]]


def scattered(prefix: str) -> list[tuple[str, datetime]]:
    """Five ids with instants, in no order: oldest first, then by id, they are the prefix and b,
    a, c, d, e."""
    seconds = {"d": 2, "b": 0, "c": 1, "a": 1, "e": 3}
    return [(f"{prefix}{name}", NOW + timedelta(seconds=n)) for name, n in seconds.items()]


# A record's place in a relay's order: (its instant, its id).
type Key = tuple[datetime, str]


async def pages_of_two[T](
    page: Callable[[int, Key | None], Awaitable[Sequence[T]]], key: Callable[[T], Key]
) -> list[list[str]]:
    """The ids of the pages `page` gives two at a time, each after the last one's last record
    (its `key`), until an empty one; all at once it gives the same, in the same order."""
    pages: list[list[str]] = []
    after = None
    while found := [key(record) for record in await page(2, after)]:
        pages.append([record_id for _, record_id in found])
        after = found[-1]
    everything = [key(record)[1] for record in await page(10, None)]
    assert everything == [record_id for ids in pages for record_id in ids]
    return pages


async def unpublished_credit(
    payments: Payments, payment_id: str, at: datetime, user_id: str = "alice"
) -> OutboxEntry:
    """A payment stored at `at` with a credit recorded and never published; with `user_id`, the
    credit as an earlier version may have stored it."""
    command = credit(f"nowpayments:{payment_id}").model_copy(update={"user_id": user_id})
    entry = OutboxEntry(command, created_at=at)
    state = PaymentState(payment_id=payment_id, status=PaymentStatus.FINISHED)
    await payments.save(
        state,
        order_id=f"dep_{payment_id}",
        user_id="alice",
        expected_version=None,
        credit=entry,
        review=None,
        now=at,
    )
    return entry


async def test_unpublished_commands_come_by_owner_oldest_first_a_page_after_another(
    stores: Stores,
) -> None:
    payments = stores.payments
    for payment_id, at in scattered("pay_"):
        await unpublished_credit(payments, payment_id, at)
    sent = await unpublished_credit(payments, "pay_0", NOW)
    await payments.mark_published("pay_0", sent.command_id)  # not the relay's any more
    cutoff = NOW + timedelta(seconds=3)  # pay_e's credit is younger
    pages = await pages_of_two(
        lambda limit, after: payments.unpublished(cutoff, limit, after),
        lambda u: (u.owner_created_at, u.owner_id),
    )
    assert pages == [["pay_b", "pay_a"], ["pay_c", "pay_d"]]


async def test_an_unpublished_command_the_model_refuses_comes_back_as_stored(
    stores: Stores,
) -> None:
    """Reading the outbox does not fail on it (over MongoDB it failed the whole page); building
    it does, for the relay to report and go on."""
    await unpublished_credit(stores.payments, "601", NOW, user_id="old user")
    newer = await unpublished_credit(stores.payments, "602", NOW + timedelta(seconds=1))
    found = await stores.payments.unpublished(NOW + timedelta(seconds=2), 10)
    assert [(u.owner_id, u.command["user_id"]) for u in found] == [
        ("601", "old user"),
        ("602", "alice"),
    ]
    with pytest.raises(ValueError, match="invalid_field"):
        found[0].build()
    assert found[1].build() == newer.command


async def test_repeat_payments_are_found_for_polling_until_closed(stores: Stores) -> None:
    payments = stores.payments

    async def save(payment_id: str, at: datetime, parent: str | None, version: int | None) -> None:
        state = PaymentState(
            payment_id=payment_id, status=PaymentStatus.CONFIRMING, seen=frozenset({"confirming"})
        )
        kwargs: dict[str, Any] = {"order_id": "dep_1", "user_id": "alice", "credit": None}
        if parent is not None:
            kwargs["parent_payment_id"] = parent
        assert await payments.save(state, expected_version=version, review=None, now=at, **kwargs)

    await save("601", NOW - timedelta(hours=5), None, None)  # the order's own payment
    await save("602", NOW - timedelta(hours=2), "601", None)
    await save("603", NOW - timedelta(hours=3), "601", None)
    await save("604", NOW, "601", None)  # too young
    # Stored before it was known for a repeat payment (an approved review item, say): a later
    # save names its parent, and a save that names none keeps it.
    await save("605", NOW - timedelta(hours=4), None, None)
    await save("605", NOW - timedelta(hours=1), "601", 0)
    await save("605", NOW - timedelta(minutes=30), None, 1)
    cutoff = NOW - timedelta(hours=1)
    due = await payments.open_repeats_older_than(cutoff, NOW, 10)
    assert [p.state.payment_id for p in due] == ["605", "603", "602"]  # oldest first
    assert [(p.parent_payment_id, p.order_id, p.version) for p in due] == [
        ("601", "dep_1", 2),
        ("601", "dep_1", 0),
        ("601", "dep_1", 0),
    ]
    assert [p.created_at for p in due] == [NOW - timedelta(hours=h) for h in (4, 3, 2)]
    assert [(p.polled_at, p.poll_closed) for p in due] == [(None, False)] * 3
    first_two = await payments.open_repeats_older_than(cutoff, NOW, 2)
    assert [p.state.payment_id for p in first_two] == ["605", "603"]
    own = await payments.get("601")
    assert own is not None
    assert own.parent_payment_id is None

    await payments.mark_polled("603", NOW, closed=False)
    due = await payments.open_repeats_older_than(cutoff, NOW, 10)
    assert [p.state.payment_id for p in due] == ["605", "602"]  # 603 polled just now
    later = NOW + timedelta(minutes=11)
    due = await payments.open_repeats_older_than(cutoff, later, 10)
    assert [p.state.payment_id for p in due] == ["605", "603", "602"]
    polled = await payments.get("603")
    assert polled is not None
    # Polling changes neither the state nor the version: the next IPN saves over it.
    assert (polled.polled_at, polled.poll_closed, polled.version) == (NOW, False, 0)
    await save("603", later, None, 0)
    saved_over = await payments.get("603")
    assert saved_over is not None
    assert (saved_over.polled_at, saved_over.version) == (NOW, 1)  # an IPN's save keeps it
    await payments.mark_polled("603", later, closed=True)
    await payments.mark_polled("603", later + timedelta(days=1), closed=False)  # stays closed
    due = await payments.open_repeats_older_than(later, later + timedelta(days=2), 10)
    assert [p.state.payment_id for p in due] == ["605", "602", "604"]  # 603 closed
    closed = await payments.get("603")
    assert closed is not None
    assert (closed.poll_closed, closed.polled_at, closed.version) == (
        True,
        later + timedelta(days=1),
        1,
    )
    assert closed.parent_payment_id == "601"
    assert closed.created_at == NOW - timedelta(hours=3)


async def test_orders_attach_a_payment_and_are_polled_until_closed(stores: Stores) -> None:
    orders = stores.orders
    old = DepositOrder("dep_old", "alice", "btc", "100", "usd", NOW - timedelta(hours=2))
    young = DepositOrder("dep_young", "alice", "btc", "100", "usd", NOW)
    unpaid = DepositOrder("dep_unpaid", "bob", "btc", "100", "usd", NOW - timedelta(hours=3))
    for order in (old, young, unpaid):
        await orders.add(order)
    with pytest.raises(Exception):  # noqa: B017, PT011 - each driver has its duplicate error
        await orders.add(old)
    payment = CreatedPayment("5077", "bc1q", "btc", "0.0015", "100", "usd")
    for order in (old, young):
        await orders.attach_payment(order.order_id, payment)
    stored = await orders.get("dep_old")
    assert stored is not None
    assert stored.payment == payment
    cutoff = NOW - timedelta(hours=1)
    due = await orders.open_older_than(cutoff, NOW, 10)
    assert [o.order_id for o in due] == ["dep_old"]
    await orders.mark_polled("dep_old", NOW, closed=False)
    assert await orders.open_older_than(cutoff, NOW, 10) == []  # polled just now
    later = NOW + timedelta(minutes=11)
    assert [o.order_id for o in await orders.open_older_than(cutoff, later, 10)] == ["dep_old"]
    await orders.mark_polled("dep_old", later, closed=True)
    still_open = await orders.open_older_than(later, later + timedelta(days=1), 10)
    assert [o.order_id for o in still_open] == ["dep_young"]
    closed = await orders.get("dep_old")
    assert closed is not None
    assert (closed.closed, closed.polled_at) == (True, later)


async def test_orders_and_repeat_payments_due_a_poll_come_oldest_first_a_page_after_another(
    stores: Stores,
) -> None:
    """The poller's pages: each after the last one's last (by creation, then id), and the poll
    stamp still holds on a later page."""
    orders, payments = stores.orders, stores.payments
    created = CreatedPayment("5077", "bc1q", "btc", "0.0015", "100", "usd")
    for order_id, at in scattered("dep_"):
        await orders.add(DepositOrder(order_id, "alice", "btc", "100", "usd", at, created))
    for payment_id, at in scattered("pay_"):
        state = PaymentState(payment_id=payment_id, status=PaymentStatus.CONFIRMING)
        await payments.save(
            state,
            order_id="dep_a",
            user_id="alice",
            expected_version=None,
            credit=None,
            review=None,
            now=at,
            parent_payment_id="5077",
        )
    await orders.mark_polled("dep_c", NOW, closed=False)  # polled since: not due
    await payments.mark_polled("pay_c", NOW, closed=False)
    cutoff = NOW + timedelta(seconds=3)  # the e ones are too young
    order_pages = await pages_of_two(
        lambda limit, after: orders.open_older_than(cutoff, NOW, limit, after),
        lambda o: (o.created_at, o.order_id),
    )
    assert order_pages == [["dep_b", "dep_a"], ["dep_d"]]
    repeat_pages = await pages_of_two(
        lambda limit, after: payments.open_repeats_older_than(cutoff, NOW, limit, after),
        lambda p: (p.created_at or NOW, p.state.payment_id),
    )
    assert repeat_pages == [["pay_b", "pay_a"], ["pay_d"]]


async def test_an_order_holding_a_payment_is_found_by_the_payment(stores: Stores) -> None:
    orders = stores.orders
    for order_id in ("dep_1", "dep_2"):
        await orders.add(DepositOrder(order_id, "alice", "btc", "100", "usd", NOW))
    await orders.attach_payment("dep_2", CreatedPayment("5077", "bc1q", "btc", "1", "1", "usd"))
    assert await orders.holding("5077") == "dep_2"
    assert await orders.holding("5078") is None


def review_item(review_id: str, at: datetime, *, bound: bool = True) -> ReviewItem:
    return ReviewItem(
        review_id=review_id,
        reason="amount_too_precise",
        detail="0.000000001",
        order_id="dep_1",
        payment_id="501",
        payment_status="finished",
        user_id="alice",
        bound=bound,
        currency="BTC",
        cumulative=Decimal("0.01"),
        created_at=at,
    )


async def test_a_payments_review_items_tell_what_it_reported(stores: Stores) -> None:
    reviews = stores.reviews
    assert await reviews.payment_statuses("501") == set()
    await reviews.add(review_item("rv_p1", NOW))
    await reviews.add(replace(review_item("rv_p2", NOW), payment_status="refunded"))
    await reviews.add(replace(review_item("rv_p3", NOW), payment_id="502", payment_status="failed"))
    assert await reviews.payment_statuses("501") == {"finished", "refunded"}
    assert await reviews.payment_statuses("502") == {"failed"}
    assert await reviews.payment_statuses("50") == set()


async def test_review_items_are_queued_once_and_closed_once(stores: Stores) -> None:
    reviews = stores.reviews
    assert await reviews.add(review_item("rv_a", NOW))
    assert not await reviews.add(review_item("rv_a", NOW + timedelta(seconds=5)))
    # An item that carries its own credit (unbound items approved before their payment's
    # document kept their credits): relayed until published.
    entry = OutboxEntry(credit("nowpayments:501"), created_at=NOW)
    unbound = replace(review_item("rv_b", NOW + timedelta(seconds=1), bound=False), outbox=(entry,))
    assert await reviews.add(unbound)
    assert [i.review_id for i in await reviews.list("open", 10)] == ["rv_b", "rv_a"]
    closed = await reviews.close("rv_b", "approved", "ops", None, NOW)
    assert closed is not None
    assert (closed.status, closed.decided_by, closed.cumulative, closed.bound) == (
        "approved",
        "ops",
        Decimal("0.01"),
        False,
    )
    assert await reviews.close("rv_b", "dismissed", "ops2", "late", NOW) is None
    dismissed = await reviews.close("rv_a", "dismissed", "ops", "fine", NOW)
    assert dismissed is not None
    assert dismissed.note == "fine"
    assert [i.review_id for i in await reviews.list("open", 10)] == []
    assert [i.review_id for i in await reviews.list("approved", 10)] == ["rv_b"]
    later = NOW + timedelta(seconds=1)
    assert [(u.owner_id, u.build()) for u in await reviews.unpublished(later, 10)] == [
        ("rv_b", entry.command)
    ]
    await reviews.mark_published("rv_b", entry.command_id)
    assert await reviews.unpublished(later, 10) == []


async def test_a_claimed_review_item_is_only_approved_or_released(stores: Stores) -> None:
    reviews = stores.reviews
    assert await reviews.claim("rv_missing", "ops", NOW) is None
    await reviews.add(review_item("rv_a", NOW))
    later = NOW + timedelta(seconds=1)
    claimed = await reviews.claim("rv_a", "ops", later)
    assert claimed is not None
    assert (claimed.status, claimed.decided_by, claimed.decided_at) == ("approving", "ops", later)
    assert await reviews.claim("rv_a", "ops2", later) is None  # claimed once
    assert await reviews.close("rv_a", "dismissed", "ops2", "fraud", later) is None
    assert await reviews.close("rv_a", "approved", "ops2", None, later) is None
    assert [i.review_id for i in await reviews.list("approving", 10)] == ["rv_a"]
    assert await reviews.list("open", 10) == []
    released = await reviews.release("rv_a")
    assert released is not None
    assert (released.status, released.decided_by, released.decided_at) == ("open", None, None)
    assert await reviews.release("rv_a") is None  # only an approving item is released
    assert await reviews.finish("rv_a") is None  # nor approved unless claimed
    assert await reviews.claim("rv_a", "ops2", NOW) is not None
    finished = await reviews.finish("rv_a")
    assert finished is not None
    assert (finished.status, finished.decided_by, finished.decided_at, finished.note) == (
        "approved",
        "ops2",
        NOW,
        None,
    )
    assert await reviews.finish("rv_a") is None
    assert await reviews.release("rv_a") is None
    assert await reviews.claim("rv_a", "ops", NOW) is None
    assert await reviews.close("rv_a", "dismissed", "ops", "late", NOW) is None
    assert [i.review_id for i in await reviews.list("approved", 10)] == ["rv_a"]
    assert await reviews.list("approving", 10) == []
    stored = await reviews.get("rv_a")
    assert stored is not None
    assert (stored.status, stored.decided_by, stored.outbox) == ("approved", "ops2", ())


def withdrawal(withdrawal_id: str, user: str, at: datetime, amount: str = "0.1") -> Withdrawal:
    return Withdrawal(
        withdrawal_id=withdrawal_id,
        user_id=user,
        currency="BTC",
        amount=Decimal(amount),
        fee=Decimal("0.0001"),
        address="bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        status=WithdrawalStatus.PENDING,
        created_at=at,
        updated_at=at,
    )


def unlock(withdrawal_id: str, attempt: int) -> UnlockCommand:
    return UnlockCommand(
        user_id="alice",
        currency="BTC",
        amount="0.1001",
        transaction_type="withdrawal_unlock",
        reference_id=reference_id(withdrawal_id, attempt),
        hold_id=reference_id(withdrawal_id),
    )


async def test_a_withdrawal_is_inserted_once_and_answers_the_one_stored_first(
    stores: Stores,
) -> None:
    first = withdrawal("wd_once", "alice", NOW)
    assert await stores.withdrawals.insert(first) is None
    assert await stores.withdrawals.insert(withdrawal("wd_once", "bob", NOW)) == first
    assert await stores.withdrawals.get("wd_once") == first


async def test_withdrawal_decisions_once_and_reopened_only_for_the_refused_one(
    stores: Stores,
) -> None:
    withdrawals = stores.withdrawals
    await withdrawals.insert(withdrawal("wd_1", "alice", NOW))
    decision = await withdrawals.decide("wd_1", "reject", "ops", "no", unlock("wd_1", 1), NOW)
    assert decision is None  # still pending: nothing to decide
    locked = await withdrawals.transition(
        "wd_1", WithdrawalStatus.PENDING, WithdrawalStatus.LOCKED, None, NOW
    )
    assert locked is not None
    assert (
        await withdrawals.transition(
            "wd_1", WithdrawalStatus.PENDING, WithdrawalStatus.LOCKED, None, NOW
        )
        is None
    )
    decided = await withdrawals.decide("wd_1", "reject", "ops", "no", unlock("wd_1", 1), NOW)
    assert decided is not None
    assert (decided.decision, decided.attempt) == ("reject", 1)
    assert await withdrawals.decide("wd_1", "approve", "ops2", None, unlock("wd_1", 1), NOW) is None
    # A refusal of another attempt's command reopens nothing; of the current one, it does.
    assert await withdrawals.reopen("wd_1", reference_id("wd_1", 2), "x", NOW) is None
    reopened = await withdrawals.reopen("wd_1", reference_id("wd_1", 1), "unlock_rejected", NOW)
    assert reopened is not None
    assert (reopened.decision, reopened.reason, reopened.attempt) == (None, "unlock_rejected", 1)
    # A decision made from a read before the reopen (for attempt 1) is stale: refused.
    assert await withdrawals.decide("wd_1", "reject", "ops", "no", unlock("wd_1", 1), NOW) is None
    again = await withdrawals.decide("wd_1", "reject", "ops", "no", unlock("wd_1", 2), NOW)
    assert again is not None
    assert again.attempt == 2
    assert await withdrawals.reopen("wd_1", reference_id("wd_1", 1), "stale", NOW) is None
    stored = await withdrawals.get("wd_1")
    assert stored is not None
    assert [e.command.reference_id for e in stored.outbox] == [
        reference_id("wd_1", 1),
        reference_id("wd_1", 2),
    ]


async def test_a_new_withdrawal_decision_replaces_the_reason_a_refusal_left(
    stores: Stores,
) -> None:
    """Reopened with the wallet's refusal as its reason, then approved: the approval has no
    reason, and the refusal no longer is the withdrawal's (it stayed, on the approved one too)."""
    withdrawals = stores.withdrawals
    await withdrawals.insert(withdrawal("wd_r", "alice", NOW))
    await withdrawals.transition(
        "wd_r", WithdrawalStatus.PENDING, WithdrawalStatus.LOCKED, None, NOW
    )
    assert await withdrawals.decide("wd_r", "approve", "ops", None, unlock("wd_r", 1), NOW)
    refusal = "release_locked_rejected: insufficient_locked_funds"
    reopened = await withdrawals.reopen("wd_r", reference_id("wd_r", 1), refusal, NOW)
    assert reopened is not None
    assert reopened.reason == refusal
    approved = await withdrawals.decide("wd_r", "approve", "ops", None, unlock("wd_r", 2), NOW)
    assert approved is not None
    assert (approved.decision, approved.reason) == ("approve", None)
    moved = await withdrawals.transition(
        "wd_r", WithdrawalStatus.LOCKED, WithdrawalStatus.APPROVED, None, NOW
    )
    assert moved is not None
    assert (moved.status, moved.reason) == (WithdrawalStatus.APPROVED, None)
    # A reject's reason replaces it the same way.
    await withdrawals.insert(withdrawal("wd_s", "alice", NOW))
    await withdrawals.transition(
        "wd_s", WithdrawalStatus.PENDING, WithdrawalStatus.LOCKED, None, NOW
    )
    assert await withdrawals.decide("wd_s", "approve", "ops", None, unlock("wd_s", 1), NOW)
    assert await withdrawals.reopen("wd_s", reference_id("wd_s", 1), refusal, NOW)
    rejected = await withdrawals.decide(
        "wd_s", "reject", "ops", "sanctions", unlock("wd_s", 2), NOW
    )
    assert rejected is not None
    assert rejected.reason == "sanctions"


async def test_withdrawals_awaiting_the_wallet_are_those_whose_last_command_is_unanswered(
    stores: Stores,
) -> None:
    """Pending (the lock's answer awaited) or locked with a decision (the decision's), the last
    command published, and neither moved nor asked again since the cutoff; the longest unmoved
    first. A refused decision (reopened) and a locked, undecided withdrawal wait on an admin."""
    withdrawals = stores.withdrawals
    earlier = NOW - timedelta(minutes=1)
    names = ("wd_old", "wd_pending", "wd_unpublished", "wd_locked", "wd_deciding", "wd_reopened")
    for name in (*names, "wd_failed", "wd_asked", "wd_moved"):
        lock = LockCommand(
            user_id="alice",
            currency="BTC",
            amount="0.1001",
            transaction_type="withdrawal_lock",
            reference_id=reference_id(name),
        )
        at = {"wd_old": earlier, "wd_moved": NOW + timedelta(minutes=2)}.get(name, NOW)
        entry = OutboxEntry(lock, created_at=at)
        await withdrawals.insert(replace(withdrawal(name, "alice", at), outbox=(entry,)))
        if name != "wd_unpublished":
            await withdrawals.mark_published(name, lock.command_id)
    pending, locked = WithdrawalStatus.PENDING, WithdrawalStatus.LOCKED
    await withdrawals.transition("wd_failed", pending, WithdrawalStatus.FAILED, "no", NOW)
    for name in ("wd_locked", "wd_deciding", "wd_reopened"):
        await withdrawals.transition(name, pending, locked, None, NOW)
    for name in ("wd_deciding", "wd_reopened"):
        decided = await withdrawals.decide(name, "reject", "ops", "no", unlock(name, 1), NOW)
        assert decided is not None
    await withdrawals.reopen("wd_reopened", reference_id("wd_reopened", 1), "unlock_rejected", NOW)
    await withdrawals.mark_asked("wd_asked", NOW + timedelta(minutes=2))
    cutoff = NOW + timedelta(minutes=1)

    waiting = await withdrawals.awaiting_wallet(cutoff, 10)
    # The decision's unlock is not published yet: the outbox relay's to send, not to ask about.
    assert [w.withdrawal_id for w in waiting] == ["wd_old", "wd_pending"]
    stored = await withdrawals.get("wd_deciding")
    assert stored is not None
    await withdrawals.mark_published("wd_deciding", stored.outbox[-1].command_id)
    waiting = await withdrawals.awaiting_wallet(cutoff, 10)
    assert waiting[0].withdrawal_id == "wd_old"
    assert sorted(w.withdrawal_id for w in waiting) == ["wd_deciding", "wd_old", "wd_pending"]
    assert [w.withdrawal_id for w in await withdrawals.awaiting_wallet(cutoff, 1)] == ["wd_old"]
    assert await withdrawals.awaiting_wallet(NOW, 10) == [await withdrawals.get("wd_old")]
    # Asked again, or moved, after the cutoff: listed once the cutoff passes that.
    later = await withdrawals.awaiting_wallet(NOW + timedelta(minutes=3), 10)
    assert {w.withdrawal_id for w in later} == {
        "wd_old",
        "wd_pending",
        "wd_deciding",
        "wd_asked",
        "wd_moved",
    }
    # Asking is not a move: only `asked_at` changes.
    asked = await withdrawals.get("wd_asked")
    assert asked is not None
    assert (asked.asked_at, asked.updated_at) == (NOW + timedelta(minutes=2), NOW)


async def test_withdrawals_awaiting_the_wallet_come_unmoved_longest_first_a_page_after_another(
    stores: Stores,
) -> None:
    withdrawals = stores.withdrawals
    for withdrawal_id, at in scattered("wd_"):
        made = withdrawal(withdrawal_id, "alice", at)
        entry = OutboxEntry(unlock(withdrawal_id, 0), created_at=made.created_at, published=True)
        await withdrawals.insert(replace(made, outbox=(entry,)))
    since = NOW + timedelta(seconds=3)  # wd_e moved since
    pages = await pages_of_two(
        lambda limit, after: withdrawals.awaiting_wallet(since, limit, after),
        lambda w: (w.updated_at, w.withdrawal_id),
    )
    assert pages == [["wd_b", "wd_a"], ["wd_c", "wd_d"]]


async def test_a_withdrawal_whose_stored_command_the_model_refuses_is_read_all_the_same(
    stores: Stores,
) -> None:
    """Stored by an earlier version (a user id from a token subject with a space, an amount with
    more decimals than its currency now has): over MongoDB reading it failed, and with it every
    ask-again page it was on and its GET. It is read with the command as stored, which only
    sending refuses, and the pages hold every withdrawal."""
    withdrawals = stores.withdrawals
    refused = {
        "wd_b": unlock("wd_b", 0).model_copy(update={"user_id": "old user"}),
        "wd_c": unlock("wd_c", 0).model_copy(update={"amount": Decimal("0.100100001")}),
    }
    for withdrawal_id, at in scattered("wd_"):
        command = refused.get(withdrawal_id, unlock(withdrawal_id, 0))
        entry = OutboxEntry(command, created_at=at, published=True)
        await withdrawals.insert(replace(withdrawal(withdrawal_id, "alice", at), outbox=(entry,)))
    since = NOW + timedelta(seconds=4)
    pages = await pages_of_two(
        lambda limit, after: withdrawals.awaiting_wallet(since, limit, after),
        lambda w: (w.updated_at, w.withdrawal_id),
    )
    assert pages == [["wd_b", "wd_a"], ["wd_c", "wd_d"], ["wd_e"]]
    listed = await withdrawals.page("alice", None, 10, None)
    assert {w.withdrawal_id for w in listed.items} == {"wd_a", "wd_b", "wd_c", "wd_d", "wd_e"}
    for withdrawal_id, command in refused.items():
        read = await withdrawals.get(withdrawal_id)
        assert read is not None
        assert read in listed.items
        [entry] = read.outbox
        assert entry.as_stored() == command.model_dump(mode="json")
        assert (entry.command_id, entry.type, entry.published) == (
            command.command_id,
            "unlock",
            True,
        )
        with pytest.raises(ValueError, match="invalid_"):
            entry.build()
    good = await withdrawals.get("wd_a")
    assert good is not None
    assert good.outbox[0].build() == good.outbox[0].command is not None


async def test_a_payment_whose_stored_credit_the_model_refuses_is_read_all_the_same(
    stores: Stores,
) -> None:
    entry = await unpublished_credit(stores.payments, "603", NOW, user_id="old user")
    stored = await stores.payments.get("603")
    assert stored is not None
    [read] = stored.outbox
    assert (read.command_id, read.as_stored()["user_id"]) == (entry.command_id, "old user")
    with pytest.raises(ValueError, match="invalid_field"):
        read.build()


async def test_withdrawal_pages_counts_and_guard(stores: Stores) -> None:
    withdrawals = stores.withdrawals
    for i in range(5):
        await withdrawals.insert(withdrawal(f"wd_{i}", "alice", NOW + timedelta(seconds=i)))
    await withdrawals.insert(withdrawal("wd_bob", "bob", NOW, amount="1"))
    await withdrawals.insert(withdrawal("wd_same_time", "alice", NOW + timedelta(seconds=4)))
    await withdrawals.transition(
        "wd_0", WithdrawalStatus.PENDING, WithdrawalStatus.FAILED, "x", NOW
    )
    seen: list[str] = []
    cursor = None
    while True:
        page = await withdrawals.page("alice", None, 2, cursor)
        seen.extend(w.withdrawal_id for w in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["wd_same_time", "wd_4", "wd_3", "wd_2", "wd_1", "wd_0"]
    failed = await withdrawals.page(None, WithdrawalStatus.FAILED, 10, None)
    assert [w.withdrawal_id for w in failed.items] == ["wd_0"]
    everyone = await withdrawals.page(None, WithdrawalStatus.PENDING, 10, None)
    assert len(everyone.items) == 6
    with pytest.raises(ValueError, match="cursor"):
        await withdrawals.page(None, None, 10, "bm90LWEtY3Vyc29y")
    # Instants whose offset takes them past year 1 or 9999: MongoDB's driver cannot encode them,
    # which answered 500 instead of 400 invalid_cursor.
    for edge in ("0001-01-01T00:00:00+14:00|wd_x", "9999-12-31T23:59:59-14:00|wd_x"):
        crafted = base64.urlsafe_b64encode(edge.encode()).decode()
        with pytest.raises(ValueError, match="cursor"):
            await withdrawals.page("alice", None, 10, crafted)
    assert await withdrawals.open_count("alice") == 5
    # Fees count against the limit; failed ones do not.
    assert await withdrawals.total_since("alice", "BTC", NOW) == Decimal("0.5005")
    assert await withdrawals.total_since("bob", "BTC", NOW) == Decimal("1.0001")
    async with withdrawals.user_guard("alice", NOW):
        with pytest.raises(Conflict):
            async with withdrawals.user_guard("alice", NOW):
                pass
        async with withdrawals.user_guard("bob", NOW):
            pass
    async with withdrawals.user_guard("alice", NOW):
        pass


# A withdrawal as the version before `attempt` existed stored it on MongoDB: no `attempt`, and its
# one decision (if any) under the lock's reference `withdrawal:<id>`. Read, it is at attempt 0
# undecided and at attempt 1 decided; every conditional write took it as neither (MongoDB's
# equality does not match a missing field), so its money stayed locked.
OLD_ID = "wd_old"
OLD_POLICY = WithdrawalPolicy(fees={"BTC": Decimal("0.0001")}, max_per_request={}, daily_limit={})
REFUSED_RELEASE = "release_locked_rejected: insufficient_locked_funds"


@dataclass
class OldWithdrawal:
    database: AsyncDatabase[dict[str, Any]]
    handler: WithdrawalHandler
    publisher: RecordingPublisher
    wallet: Any
    clock: list[datetime]
    lock: LockCommand
    release: ReleaseLockedCommand

    async def store(self, *decided: WalletCommand, reason: str | None = None) -> None:
        """The document as that version wrote it: locked, decided with `decided` (its command
        sent) or not."""
        await self.database[WITHDRAWALS].insert_one(
            {
                "_id": OLD_ID,
                "withdrawal_id": OLD_ID,
                "user_id": "alice",
                "currency": "BTC",
                "amount": Decimal128("0.1"),
                "fee": Decimal128("0.0001"),
                "address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
                "status": "locked",
                "reason": reason,
                "decision": "approve" if decided else None,
                "decided_by": "ops" if decided else None,
                "created_at": NOW,
                "updated_at": NOW,
                "outbox": [
                    {
                        "command_id": command.command_id,
                        "reference_id": command.reference_id,
                        "command": command.model_dump(mode="json"),
                        "published": True,
                        "created_at": NOW,
                        "result": None,
                    }
                    for command in (self.lock, *decided)
                ],
            }
        )

    async def stored_attempt(self) -> int | None:
        document = await self.database[WITHDRAWALS].find_one({"_id": OLD_ID})
        assert document is not None
        return document.get("attempt")

    def refuse_releases(self) -> None:
        """The wallet refuses every release from now on (its hold emptied behind our back)."""
        self.publisher.answer = lambda command: (
            self.wallet._result(command, "rejected", "insufficient_locked_funds")
            if isinstance(command, ReleaseLockedCommand)
            else self.wallet.apply(command)
        )


@pytest_asyncio.fixture
async def old(
    mongo_client: AsyncMongoClient[dict[str, Any]], fake_wallet: Any
) -> AsyncIterator[OldWithdrawal]:
    database = mongo_client[unique_database_name("gw_old_withdrawal")]
    await ensure_indexes(database)
    clock = [NOW]
    publisher = RecordingPublisher(answer=fake_wallet.apply)
    handler = WithdrawalHandler(
        MongoWithdrawals(database), publisher, OLD_POLICY, clock=lambda: clock[0]
    )
    hold = reference_id(OLD_ID)
    lock = LockCommand(
        user_id="alice",
        currency="BTC",
        amount="0.1001",
        transaction_type="withdrawal_lock",
        reference_id=hold,
        issued_at=NOW,
    )
    release = ReleaseLockedCommand(
        user_id="alice",
        currency="BTC",
        amount="0.1001",
        fee="0.0001",
        destination="withdrawals",
        transaction_type="withdrawal_release",
        reference_id=hold,
        hold_id=hold,
        issued_at=NOW,
    )
    fake_wallet.fund("alice", "BTC", "1")
    try:
        yield OldWithdrawal(database, handler, publisher, fake_wallet, clock, lock, release)
    finally:
        await mongo_client.drop_database(database.name)


@pytest.mark.integration
@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_an_undecided_withdrawal_stored_before_attempt_existed_is_decided(
    old: OldWithdrawal, decision: str
) -> None:
    """It answered 409 withdrawal_changed to every approve and reject."""
    await old.store()
    assert old.wallet.apply(old.lock).status == "applied"
    read = await old.handler.withdrawals.get(OLD_ID)
    assert read is not None
    assert (read.status, read.decision, read.attempt) == (WithdrawalStatus.LOCKED, None, 0)
    if decision == "approve":
        decided = await old.handler.approve("ops", OLD_ID)
        assert (decided.status, decided.reason) == (WithdrawalStatus.APPROVED, None)
        assert old.wallet.balance("alice", "BTC") == (Decimal("0.8999"), Decimal(0))
    else:
        decided = await old.handler.reject("ops", OLD_ID, "sanctions")
        assert (decided.status, decided.reason) == (WithdrawalStatus.REJECTED, "sanctions")
        assert old.wallet.balance("alice", "BTC") == (Decimal(1), Decimal(0))
    # Its first decision, under the lock's reference as that version's would have been.
    assert old.publisher.published[-1].reference_id == reference_id(OLD_ID)
    assert (decided.attempt, await old.stored_attempt()) == (1, 1)


@pytest.mark.integration
async def test_an_undecided_withdrawal_stored_before_attempt_existed_is_reopened_when_refused(
    old: OldWithdrawal,
) -> None:
    await old.store()
    assert old.wallet.apply(old.lock).status == "applied"
    real = old.publisher.answer
    old.refuse_releases()
    refused = await old.handler.approve("ops", OLD_ID)
    assert (refused.status, refused.decision, refused.reason) == (
        WithdrawalStatus.LOCKED,
        None,
        REFUSED_RELEASE,
    )
    assert (refused.attempt, await old.stored_attempt()) == (1, 1)
    old.clock[0] += old.handler.ask_again_after + timedelta(seconds=1)
    assert await old.handler.ask_again() == 0  # nothing waits on the wallet: an admin decides
    old.publisher.answer = real
    rejected = await old.handler.reject("ops", OLD_ID, "sanctions")
    assert (rejected.status, rejected.reason) == (WithdrawalStatus.REJECTED, "sanctions")
    assert old.publisher.published[-1].reference_id == reference_id(OLD_ID, 2)
    assert old.wallet.balance("alice", "BTC") == (Decimal(1), Decimal(0))


@pytest.mark.integration
async def test_a_refused_decision_stored_before_attempt_existed_is_reopened_and_decided_again(
    old: OldWithdrawal,
) -> None:
    """Decided by that version, its release refused (noted as its reason, the decision kept, as
    that version did): it was never reopened, approve and reject answered 409 already_decided, and
    the ask-again pass sent the refused release again every period."""
    # The wallet refused the release (the hold held nothing then), and keeps that answer for it.
    assert old.wallet.apply(old.release).status == "rejected"
    assert old.wallet.apply(old.lock).status == "applied"
    await old.store(old.release, reason=REFUSED_RELEASE)
    read = await old.handler.withdrawals.get(OLD_ID)
    assert read is not None
    assert (read.decision, read.attempt) == ("approve", 1)
    with pytest.raises(Conflict) as waiting:
        await old.handler.reject("ops2", OLD_ID, "sanctions")
    assert waiting.value.code == "already_decided"  # its release's answer is awaited
    # Its answer never came to this version: the release is sent again, the wallet answers it
    # with the refusal, and the withdrawal is reopened for an admin.
    old.clock[0] += old.handler.ask_again_after + timedelta(seconds=1)
    assert await old.handler.ask_again() == 1
    resent = old.publisher.published[-1]
    assert resent.command_id == old.release.command_id
    reopened = await old.handler.apply_result(old.wallet.apply(resent))
    assert reopened is not None
    assert (reopened.status, reopened.decision, reopened.reason) == (
        WithdrawalStatus.LOCKED,
        None,
        REFUSED_RELEASE,
    )
    assert (reopened.attempt, await old.stored_attempt()) == (1, 1)
    old.clock[0] += old.handler.ask_again_after + timedelta(seconds=1)
    assert await old.handler.ask_again() == 0
    # Decided again under a reference of its own: the wallet does not answer it with the refusal.
    approved = await old.handler.approve("ops2", OLD_ID)
    assert (approved.status, approved.decision, approved.reason) == (
        WithdrawalStatus.APPROVED,
        "approve",
        None,
    )
    assert old.publisher.published[-1].reference_id == reference_id(OLD_ID, 2)
    assert old.wallet.balance("alice", "BTC") == (Decimal("0.8999"), Decimal(0))


@pytest.mark.integration
async def test_a_credit_an_earlier_version_recorded_as_refused_unrecorded_is_asked_again(
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    """Earlier versions stored a `rejected / processing_failed` answer as the credit's outcome
    (and noted it): the wallet had recorded none, and nothing sent the credit again. Starting
    the gateway (`ensure_indexes`) clears such answers, and only those, so the ask-again pass
    finds the credit; the note stays."""
    database = mongo_client[unique_database_name("gw_old_refusal")]
    try:
        await ensure_indexes(database)
        payments = MongoPayments(database)
        for payment_id in ("701", "702", "703"):
            entry = await unpublished_credit(payments, payment_id, NOW)
            await payments.mark_published(payment_id, entry.command_id)
            reason = {"701": "processing_failed", "702": "unknown_currency"}.get(payment_id)
            if reason is not None:  # 703: not answered yet
                # as an earlier version recorded the answer
                await database[PAYMENTS].update_one(
                    {"_id": payment_id, "outbox.command_id": entry.command_id},
                    {
                        "$set": {
                            "outbox.$.result": {"status": "rejected", "reason": reason, "at": NOW}
                        },
                        "$push": {
                            "reviews": {"code": "credit_rejected", "detail": reason, "at": NOW}
                        },
                    },
                )
        later = NOW + timedelta(minutes=5)
        assert [p.state.payment_id for p in await payments.awaiting_wallet(later, 10)] == ["703"]

        await ensure_indexes(database)  # the gateway starts
        waiting = await payments.awaiting_wallet(later, 10)
        assert [p.state.payment_id for p in waiting] == ["701", "703"]
        assert await payments.result_of("702", "nowpayments:702") == (
            "rejected",
            "unknown_currency",
        )
        reopened = await database[PAYMENTS].find_one({"_id": "701"})
        assert reopened is not None
        assert [n["code"] for n in reopened["reviews"]] == ["credit_rejected"]
        assert await reopen_unrecorded_refusals(database) == 0  # once
    finally:
        await mongo_client.drop_database(database.name)
