"""The missed-webhook poller: deposits open too long are asked about, and the answer goes through
the same rules as an IPN (bound to the order's payment, canonical numbers, credited once)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from structlog.testing import capture_logs

from ipn_gateway.adapters.memory import (
    MemoryDepositOrders,
    MemoryIpnLog,
    MemoryPayments,
    MemoryReviews,
    RecordingPublisher,
)
from ipn_gateway.application.ipn import IpnHandler
from ipn_gateway.application.poller import MissedIpnPoller
from ipn_gateway.application.records import CreatedPayment, DepositOrder
from ipn_gateway.domain.errors import UpstreamUnavailable
from ipn_gateway.domain.js_json import JsonNumber, JsonValue
from ipn_gateway.domain.payments import ConfirmationPolicy, read_ipn
from shared.messaging import CreditCommand

NOW = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


class FakeNowPayments:
    def __init__(self) -> None:
        self.status: dict[str, dict[str, JsonValue]] = {}
        self.asked: list[str] = []
        self.down = False

    async def payment_status(self, payment_id: str) -> dict[str, JsonValue]:
        self.asked.append(payment_id)
        if self.down:
            raise UpstreamUnavailable("nowpayments_unavailable", "down")
        return self.status[payment_id]

    async def create_payment(self, **_: str) -> CreatedPayment:
        raise NotImplementedError


def answer(payment_id: str, status: str, outcome: str, order_id: str) -> dict[str, JsonValue]:
    return {
        "payment_id": payment_id,  # the API answers it as a string
        "payment_status": status,
        "pay_currency": "btc",
        "order_id": order_id,
        "actually_paid": JsonNumber(outcome),
        "outcome_amount": JsonNumber(outcome),
        "outcome_currency": "btc",
    }


@dataclass
class Rig:
    clock: dict[str, datetime]
    orders: MemoryDepositOrders
    publisher: RecordingPublisher
    ipn_log: MemoryIpnLog
    handler: IpnHandler
    provider: FakeNowPayments
    poller: MissedIpnPoller


def rig() -> Rig:
    clock = {"now": NOW}
    orders, payments, publisher = MemoryDepositOrders(), MemoryPayments(), RecordingPublisher()
    ipn_log = MemoryIpnLog()
    handler = IpnHandler(
        secret="s",
        policy=ConfirmationPolicy(),
        orders=orders,
        payments=payments,
        ipn_log=ipn_log,
        publisher=publisher,
        clock=lambda: clock["now"],
        reviews=MemoryReviews(),
    )
    provider = FakeNowPayments()
    poller = MissedIpnPoller(
        orders,
        provider,
        handler,
        lambda: clock["now"],
        older_than=timedelta(minutes=30),
        every=timedelta(minutes=10),
    )
    return Rig(clock, orders, publisher, ipn_log, handler, provider, poller)


async def test_open_deposits_are_polled_credited_once_and_then_left_alone() -> None:
    r = rig()
    clock, orders, publisher, ipn_log, provider, poller = (
        r.clock,
        r.orders,
        r.publisher,
        r.ipn_log,
        r.provider,
        r.poller,
    )
    for order_id, payment_id, age in (("dep_old", "601", 60), ("dep_new", "602", 5)):
        created = CreatedPayment(payment_id, "addr", "btc", "0.002", "100", "usd")
        orders.orders[order_id] = DepositOrder(
            order_id, "alice", "btc", "100", "usd", NOW - timedelta(minutes=age), created
        )
    # Still confirming: nothing to credit yet.
    provider.status["601"] = answer("601", "confirming", "0.002", "dep_old")
    assert await poller.run_once() == 1
    assert provider.asked == ["601"]  # the young deposit is left to its IPNs
    assert publisher.published == []
    clock["now"] += timedelta(minutes=5)
    assert await poller.run_once() == 0  # polled 5 minutes ago
    provider.down = True
    clock["now"] += timedelta(minutes=6)
    assert await poller.run_once() == 0  # NOWPayments away: tried again next round
    provider.down = False
    provider.status["601"] = answer("601", "finished", "0.002", "dep_old")
    clock["now"] += timedelta(minutes=11)
    assert await poller.run_once() == 1
    credits = [c for c in publisher.published if isinstance(c, CreditCommand)]
    assert [(c.reference_id, c.amount) for c in credits] == [("nowpayments:601", Decimal("0.002"))]
    assert [r.source for r in ipn_log.records] == ["poll", "poll"]
    clock["now"] += timedelta(hours=1)
    provider.asked.clear()
    provider.status["602"] = answer("602", "waiting", "0", "dep_new")
    await poller.run_once()
    assert provider.asked == ["602"]  # 601 finished: closed; 602 is old enough now
    assert len(publisher.published) == 1


async def test_a_final_status_that_went_to_review_unresolved_is_asked_about_again() -> None:
    """A `finished` IPN without outcome_amount goes to review (nothing to credit) and leaves the
    payment `finished`: that is not an end. The poller asks NOWPayments, whose answer carries the
    outcome, and the deposit is credited once."""
    r = rig()
    created = CreatedPayment("603", "addr", "btc", "0.0015", "100", "usd")
    r.orders.orders["dep_a"] = DepositOrder(
        "dep_a", "alice", "btc", "100", "usd", NOW - timedelta(hours=1), created
    )
    without_outcome = answer("603", "finished", "0.0015", "dep_a")
    del without_outcome["outcome_amount"], without_outcome["outcome_currency"]
    verdict, review = await r.handler.apply(read_ipn(without_outcome))
    assert (verdict, review) == ("ignored", "missing_outcome")

    r.provider.status["603"] = answer("603", "finished", "0.0015", "dep_a")
    assert await r.poller.run_once() == 1
    assert r.provider.asked == ["603"]
    credits = [c for c in r.publisher.published if isinstance(c, CreditCommand)]
    assert [(c.reference_id, c.amount) for c in credits] == [("nowpayments:603", Decimal("0.0015"))]
    r.clock["now"] += timedelta(hours=1)
    assert await r.poller.run_once() == 0  # credited: the order is closed
    assert r.provider.asked == ["603"]


def repeat_answer(
    payment_id: str, status: str, outcome: str, order_id: str, parent: str
) -> dict[str, JsonValue]:
    """A repeat payment (a re-deposit to the order's address), as NOWPayments reports it."""
    return {**answer(payment_id, status, outcome, order_id), "parent_payment_id": parent}


async def test_a_repeat_payment_whose_later_ipns_were_lost_is_polled_and_credited_once() -> None:
    """The user sends coins to the order's address again: NOWPayments makes a repeat payment,
    and the gateway hears of it as confirming; its finished IPN is lost. The poller asks about it
    on its own, after the order was closed, and credits it once under its own id."""
    r = rig()
    created = CreatedPayment("701", "addr", "btc", "0.002", "100", "usd")
    r.orders.orders["dep_r"] = DepositOrder(
        "dep_r", "alice", "btc", "100", "usd", NOW - timedelta(days=2), created
    )
    assert await r.handler.apply(read_ipn(answer("701", "finished", "0.002", "dep_r"))) == (
        "credited",
        None,
    )
    # A re-deposit heard of as confirming; one that ended by its IPNs; one heard of just now.
    for payment_id in ("702", "703"):
        confirming = repeat_answer(payment_id, "confirming", "0.001", "dep_r", "701")
        assert (await r.handler.apply(read_ipn(confirming)))[0] == "pending"
    ended = repeat_answer("703", "finished", "0.001", "dep_r", "701")
    assert (await r.handler.apply(read_ipn(ended)))[0] == "credited"
    stored = {p: await r.handler.payments.get(p) for p in ("701", "702", "703")}
    assert {p: s.parent_payment_id for p, s in stored.items() if s} == {
        "701": None,  # the order's own payment, polled with the order
        "702": "701",
        "703": "701",
    }
    assert await r.poller.run_once() == 0  # the order's payment ended; the repeats are young
    assert r.orders.orders["dep_r"].closed
    assert r.provider.asked == []

    r.clock["now"] += timedelta(minutes=31)
    young = repeat_answer("704", "confirming", "0.003", "dep_r", "701")
    assert (await r.handler.apply(read_ipn(young)))[0] == "pending"
    r.provider.status["702"] = repeat_answer("702", "finished", "0.001", "dep_r", "701")
    r.provider.status["704"] = young
    assert await r.poller.run_once() == 1
    # The repeat payment whose IPN was lost, not the one its IPNs ended nor the young one.
    assert r.provider.asked == ["702"]
    credits = [c for c in r.publisher.published if isinstance(c, CreditCommand)]
    assert [(c.reference_id, c.amount) for c in credits] == [
        ("nowpayments:701", Decimal("0.002")),
        ("nowpayments:703", Decimal("0.001")),
        ("nowpayments:702", Decimal("0.001")),
    ]
    [polled] = r.ipn_log.records
    assert (polled.source, polled.payment_id, polled.verdict) == ("poll", "702", "credited")

    # The finished IPN arrives late: a duplicate, nothing more credited.
    late = repeat_answer("702", "finished", "0.001", "dep_r", "701")
    assert await r.handler.apply(read_ipn(late)) == ("duplicate", None)
    r.clock["now"] += timedelta(hours=1)
    r.provider.asked.clear()
    assert await r.poller.run_once() == 1
    assert r.provider.asked == ["704"]  # 702 ended: not asked again; 704 is old enough now
    assert len([c for c in r.publisher.published if isinstance(c, CreditCommand)]) == 3


async def test_a_polled_repeat_payment_is_bound_by_its_stored_parent() -> None:
    """NOWPayments' status answer for a repeat payment need not name its parent: the poller binds
    it to the order by the parent stored from its first IPN, never by guessing."""
    r = rig()
    created = CreatedPayment("801", "addr", "btc", "0.002", "100", "usd")
    r.orders.orders["dep_p"] = DepositOrder(
        "dep_p", "alice", "btc", "100", "usd", NOW - timedelta(days=2), created
    )
    confirming = repeat_answer("802", "confirming", "0.001", "dep_p", "801")
    assert (await r.handler.apply(read_ipn(confirming)))[0] == "pending"
    r.clock["now"] += timedelta(minutes=31)
    r.provider.status["801"] = answer("801", "waiting", "0.002", "dep_p")
    r.provider.status["802"] = answer("802", "finished", "0.001", "dep_p")  # no parent named
    assert await r.poller.run_once() == 2
    credits = [c for c in r.publisher.published if isinstance(c, CreditCommand)]
    assert [(c.reference_id, c.amount) for c in credits] == [("nowpayments:802", Decimal("0.001"))]
    # A payment never stored as a repeat is not taken for one: 803 stays unmatched.
    assert await r.handler.apply(read_ipn(answer("803", "finished", "0.001", "dep_p"))) == (
        "unmatched",
        "payment_id_mismatch",
    )


async def test_an_open_repeat_payment_is_asked_about_until_the_poller_gives_up() -> None:
    r = rig()
    created = CreatedPayment("711", "addr", "btc", "0.002", "100", "usd")
    # The order is closed (its own payment ended, say): its repeat payment is polled all the same.
    r.orders.orders["dep_s"] = DepositOrder(
        "dep_s", "alice", "btc", "100", "usd", NOW - timedelta(days=1), created, closed=True
    )
    waiting = repeat_answer("712", "waiting", "0", "dep_s", "711")
    assert (await r.handler.apply(read_ipn(waiting)))[0] == "pending"
    r.provider.status["712"] = waiting
    r.clock["now"] += timedelta(minutes=31)
    r.provider.down = True
    assert await r.poller.run_once() == 0  # NOWPayments away: asked again next round
    r.provider.down = False
    r.clock["now"] += timedelta(minutes=11)
    assert await r.poller.run_once() == 1
    r.clock["now"] += timedelta(minutes=5)
    assert await r.poller.run_once() == 0  # asked 5 minutes ago
    assert r.provider.asked == ["712", "712"]
    r.clock["now"] = NOW + timedelta(days=14, minutes=1)
    assert await r.poller.run_once() == 1  # asked one last time, then left alone
    r.clock["now"] += timedelta(hours=1)
    assert await r.poller.run_once() == 0
    assert r.provider.asked == ["712", "712", "712"]
    assert r.publisher.published == []


async def test_a_poll_that_keeps_failing_stops_at_the_same_age_as_one_that_answers() -> None:
    """NOWPayments never answers about a deposit (away, or a body it keeps getting wrong): the
    deposit and its repeat payment are asked about every round until the 14-day limit, once more
    past it, and then left alone; nothing is credited."""
    r = rig()
    created = CreatedPayment("801", "addr", "btc", "0.002", "100", "usd")
    r.orders.orders["dep_f"] = DepositOrder(
        "dep_f", "alice", "btc", "100", "usd", NOW - timedelta(hours=1), created
    )
    waiting = repeat_answer("802", "waiting", "0", "dep_f", "801")
    assert (await r.handler.apply(read_ipn(waiting)))[0] == "pending"
    r.provider.down = True
    r.clock["now"] += timedelta(minutes=31)
    assert await r.poller.run_once() == 0
    assert r.provider.asked == ["801", "802"]
    r.clock["now"] = NOW + timedelta(days=13)
    assert await r.poller.run_once() == 0
    assert r.provider.asked == ["801", "802"] * 2  # still failing, still younger than 14 days
    r.clock["now"] = NOW + timedelta(days=14, minutes=1)
    assert await r.poller.run_once() == 0  # asked one last time, failed, then left alone
    r.clock["now"] += timedelta(hours=1)
    assert await r.poller.run_once() == 0
    assert r.provider.asked == ["801", "802"] * 3
    assert r.publisher.published == []


async def test_a_deposit_whose_credit_cannot_be_built_holds_back_no_other() -> None:
    """An order an earlier version stored for a user id no wallet command can carry (a space):
    the credit its finished payment is owed cannot be built. The poller stopped at it, the oldest
    order due, on every pass, so no deposit after it was ever asked about; it is logged and asked
    about again at the usual interval, as a failed question, and the others go."""
    r = rig()
    for order_id, payment_id, user in (("dep_old", "701", "old user"), ("dep_new", "702", "ann")):
        created = CreatedPayment(payment_id, "addr", "btc", "0.002", "100", "usd")
        age = timedelta(minutes=60 if order_id == "dep_old" else 50)
        r.orders.orders[order_id] = DepositOrder(
            order_id, user, "btc", "100", "usd", NOW - age, created
        )
        r.provider.status[payment_id] = answer(payment_id, "finished", "0.002", order_id)
    with capture_logs() as logs:
        assert await r.poller.run_once() == 1
    assert [c.reference_id for c in r.publisher.published] == ["nowpayments:702"]
    [logged] = [e for e in logs if e["event"] == "poll.credit_unsendable"]
    assert (logged["order_id"], logged["payment_id"], logged["log_level"]) == (
        "dep_old",
        "701",
        "error",
    )
    assert logged["reason"].startswith("invalid_field: user_id")
    assert await r.handler.payments.get("701") is None  # nothing stored or sent for it
    assert await r.poller.run_once() == 0  # asked again at the usual interval, not every pass
    r.clock["now"] += timedelta(minutes=11)
    assert await r.poller.run_once() == 0
    assert r.provider.asked == ["701", "702", "701"]


async def test_deposits_open_for_days_do_not_keep_a_newer_one_from_being_asked_about() -> None:
    """A pass takes a batch of the due deposits and the next goes on after it: with more open
    deposits than a pass takes (each due again once its interval passed), the oldest batch took
    every pass and a newer deposit whose IPNs were lost was never asked about."""
    r = rig()
    r.poller.batch = 2
    for n, order_id in enumerate(("dep_a", "dep_b", "dep_c")):
        payment_id = f"80{n}"
        created = CreatedPayment(payment_id, "addr", "btc", "0.002", "100", "usd")
        at = NOW - timedelta(hours=3 - n)
        r.orders.orders[order_id] = DepositOrder(order_id, "ann", "btc", "100", "usd", at, created)
        r.provider.status[payment_id] = answer(payment_id, "confirming", "0.002", order_id)
    for _ in range(3):
        await r.poller.run_once()
        r.clock["now"] += timedelta(minutes=11)  # each one asked is due again
    assert r.provider.asked == ["800", "801", "802", "800", "801"]


async def test_a_status_answer_without_order_id_is_applied_to_the_polled_order() -> None:
    r = rig()
    created = CreatedPayment("611", "addr", "btc", "0.002", "100", "usd")
    r.orders.orders["dep_quiet"] = DepositOrder(
        "dep_quiet", "alice", "btc", "100", "usd", NOW - timedelta(hours=1), created
    )
    status = answer("611", "finished", "0.002", "dep_quiet")
    del status["order_id"]  # the API's payment answer need not repeat the order
    r.provider.status["611"] = status
    assert await r.poller.run_once() == 1
    credits = [c for c in r.publisher.published if isinstance(c, CreditCommand)]
    assert [(c.user_id, c.reference_id) for c in credits] == [("alice", "nowpayments:611")]
