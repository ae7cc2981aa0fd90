"""The IPN handler over in-memory adapters: verdicts, credits, audit and the outbox."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ipn_gateway.adapters.memory import (
    MemoryDepositOrders,
    MemoryIpnLog,
    MemoryPayments,
    MemoryReviews,
    RecordingPublisher,
)
from ipn_gateway.application.ipn import MAX_IPN_BYTES, IpnHandler, IpnRequest
from ipn_gateway.application.rate_limit import RateLimiter
from ipn_gateway.application.records import CreatedPayment, DepositOrder
from ipn_gateway.application.relay import OutboxRelay
from ipn_gateway.domain.errors import Forbidden, IpnRejected
from ipn_gateway.domain.js_json import JsonNumber, JsonValue, js_stringify, parse_json
from ipn_gateway.domain.payments import ConfirmationPolicy, PaymentStatus
from ipn_gateway.domain.signature import sign
from shared.messaging import CreditCommand

SECRET = "component-ipn-secret"
NOW = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(
        self, policy: ConfirmationPolicy | None = None, allowed: tuple[str, ...] = ()
    ) -> None:
        self.clock = Clock()
        self.orders = MemoryDepositOrders()
        self.payments = MemoryPayments()
        self.ipn_log = MemoryIpnLog()
        self.publisher = RecordingPublisher()
        self.reviews = MemoryReviews()
        self.handler = IpnHandler(
            secret=SECRET,
            policy=policy or ConfirmationPolicy(),
            orders=self.orders,
            payments=self.payments,
            ipn_log=self.ipn_log,
            publisher=self.publisher,
            clock=self.clock,
            reviews=self.reviews,
            allowed_networks=tuple(ipaddress.ip_network(a) for a in allowed),
        )
        self.orders.orders["dep_alice_1"] = DepositOrder(
            order_id="dep_alice_1",
            user_id="alice",
            pay_currency="btc",
            price_amount="100",
            price_currency="usd",
            created_at=NOW,
            payment=CreatedPayment(
                payment_id="5077125051",
                pay_address="bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
                pay_currency="btc",
                pay_amount="0.00155",
                price_amount="100",
                price_currency="usd",
            ),
        )

    @property
    def credits(self) -> list[CreditCommand]:
        return [c for c in self.publisher.published if isinstance(c, CreditCommand)]


def body(
    status: str,
    outcome: str = "0.0015321",
    payment_id: int = 5077125051,
    order_id: str = "dep_alice_1",
) -> dict[str, JsonValue]:
    return {
        "payment_id": JsonNumber(str(payment_id)),
        "payment_status": status,
        "pay_address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        "price_amount": JsonNumber("100"),
        "price_currency": "usd",
        "pay_amount": JsonNumber("0.00155"),
        "actually_paid": JsonNumber(outcome),
        "pay_currency": "btc",
        "order_id": order_id,
        "outcome_amount": JsonNumber(outcome),
        "outcome_currency": "btc",
        "fee": {"currency": "btc", "depositFee": JsonNumber("0.0000095")},
    }


def signed(content: dict[str, JsonValue], secret: str = SECRET, ip: str = "10.0.0.1") -> IpnRequest:
    raw = js_stringify(content).encode()
    signature = sign(content, secret)
    return IpnRequest(
        raw_body=raw, signature=signature, headers={"x-nowpayments-sig": signature}, client_ip=ip
    )


async def test_life_of_a_payment_credits_exactly_once_and_is_audited() -> None:
    world = World()
    verdicts = [
        await world.handler.handle(signed(body(s))) for s in ("waiting", "confirming", "finished")
    ]
    assert verdicts == ["pending", "pending", "credited"]
    [credit] = world.credits
    assert credit.user_id == "alice"
    assert credit.currency == "BTC"
    assert credit.amount == Decimal("0.0015321")
    assert credit.transaction_type == "deposit_nowpayments"
    assert credit.reference_id == "nowpayments:5077125051"
    assert credit.metadata["order_id"] == "dep_alice_1"
    assert credit.metadata["payment_id"] == "5077125051"
    payment = world.payments.payments["5077125051"]
    assert [e.published for e in payment.outbox] == [True]
    assert [r.verdict for r in world.ipn_log.records] == ["pending", "pending", "credited"]
    assert all(r.trusted for r in world.ipn_log.records)
    assert world.ipn_log.records[0].raw_body == js_stringify(body("waiting"))


async def test_replays_ten_times_and_reverse_order_change_nothing() -> None:
    world = World()
    life = [body(s) for s in ("waiting", "confirming", "finished")]
    for content in life:
        await world.handler.handle(signed(content))
    replies = [await world.handler.handle(signed(c)) for c in life * 10 + life[::-1]]
    assert set(replies) == {"duplicate"}
    assert len(world.credits) == 1
    assert len(world.ipn_log.records) == 3 + 33


async def test_tampered_ipn_is_refused_recorded_untrusted_and_credits_nothing() -> None:
    world = World()
    request = signed(body("finished"))
    tampered = IpnRequest(
        raw_body=request.raw_body.replace(b"0.0015321", b"0.1015321"),
        signature=request.signature,
        headers=request.headers,
        client_ip="10.0.0.1",
    )
    for bad in (tampered, signed(body("finished"), secret="not-the-secret")):
        with pytest.raises(IpnRejected) as refused:
            await world.handler.handle(bad)
        assert refused.value.code == "invalid_signature"
    assert world.publisher.published == []
    assert world.payments.payments == {}
    assert [(r.verdict, r.trusted) for r in world.ipn_log.records] == [
        ("invalid_signature", False)
    ] * 2


async def test_unmatched_order_credits_nothing_and_is_kept_for_review() -> None:
    world = World()
    verdict = await world.handler.handle(signed(body("finished", order_id="dep_nobody")))
    assert verdict == "unmatched"
    assert world.publisher.published == []
    [record] = world.ipn_log.records
    assert (record.verdict, record.review_code, record.order_id) == (
        "unmatched",
        "unknown_order",
        "dep_nobody",
    )


@pytest.mark.parametrize(("credit_partial", "expected"), [(False, []), (True, [Decimal("0.001")])])
async def test_partially_paid_follows_policy(credit_partial: bool, expected: list[Decimal]) -> None:
    world = World(ConfirmationPolicy(credit_partially_paid=credit_partial))
    for _ in range(3):  # reported again by every poll while the payment stays partially paid
        await world.handler.handle(signed(body("partially_paid", outcome="0.001")))
    assert [c.amount for c in world.credits] == expected
    notes = [n.code for n in world.payments.payments["5077125051"].reviews]
    assert notes == ([] if credit_partial else ["partially_paid_not_credited"])


async def test_payer_sending_more_while_partially_paid_is_credited_the_difference() -> None:
    """Credited partial payments: the payer sends more, still short of the price, and NOWPayments
    reports partially_paid again with the larger amount. The difference is credited once; the
    first report resent, or a later one for no more, credits nothing."""
    world = World(ConfirmationPolicy(credit_partially_paid=True))
    assert await world.handler.handle(signed(body("partially_paid", outcome="0.001"))) == (
        "credited"
    )
    assert await world.handler.handle(signed(body("partially_paid", outcome="0.0012"))) == (
        "credited"
    )
    for outcome in ("0.001", "0.0012"):
        verdict = await world.handler.handle(signed(body("partially_paid", outcome=outcome)))
        assert verdict == "duplicate"
    assert await world.handler.handle(signed(body("finished", outcome="0.0015"))) == "credited"
    assert await world.handler.handle(signed(body("partially_paid", outcome="0.002"))) == (
        "duplicate"
    )
    assert [(c.reference_id, c.amount) for c in world.credits] == [
        ("nowpayments:5077125051", Decimal("0.001")),
        ("nowpayments:5077125051:topup:0.0012", Decimal("0.0002")),
        ("nowpayments:5077125051:topup:0.0015", Decimal("0.0003")),
    ]
    assert world.payments.payments["5077125051"].reviews == ()


async def test_larger_later_outcome_credits_only_the_difference_once() -> None:
    world = World(ConfirmationPolicy(credit_at={"btc": PaymentStatus.CONFIRMED}))
    await world.handler.handle(signed(body("confirmed", outcome="0.001")))
    for _ in range(3):
        await world.handler.handle(signed(body("finished", outcome="0.0015")))
    assert [(c.reference_id, c.amount) for c in world.credits] == [
        ("nowpayments:5077125051", Decimal("0.001")),
        ("nowpayments:5077125051:topup:0.0015", Decimal("0.0005")),
    ]


async def test_over_precise_outcome_is_recorded_for_review_not_credited() -> None:
    world = World()
    assert await world.handler.handle(signed(body("finished", outcome="1.234e-7"))) == "ignored"
    assert world.credits == []
    assert [n.code for n in world.payments.payments["5077125051"].reviews] == ["amount_too_precise"]
    assert world.ipn_log.records[-1].review_code == "amount_too_precise"
    [item] = world.reviews.items.values()
    assert (item.reason, item.status, item.bound) == ("amount_too_precise", "open", True)
    # The same IPN again queues nothing new; NOWPayments' corrected resend of that status is
    # decided again (not `duplicate` forever) and credits once.
    assert await world.handler.handle(signed(body("finished", outcome="1.234e-7"))) == "ignored"
    assert len(world.reviews.items) == 1
    # ... nor another note on the payment (the poller asks every few minutes for days)
    assert [n.code for n in world.payments.payments["5077125051"].reviews] == ["amount_too_precise"]
    assert await world.handler.handle(signed(body("finished", outcome="0.0000012"))) == "credited"
    assert await world.handler.handle(signed(body("finished", outcome="0.0000012"))) == "duplicate"
    assert [c.amount for c in world.credits] == [Decimal("0.0000012")]


async def test_credit_survives_a_broker_failure_through_the_outbox_relay() -> None:
    world = World()
    world.publisher.fail_next = 1
    assert await world.handler.handle(signed(body("finished"))) == "credited"
    assert world.credits == []  # not published yet, but recorded
    relay = OutboxRelay([world.payments], world.publisher, world.clock, grace=timedelta(seconds=10))
    assert await relay.run_once() == 0  # too young: the request may still be publishing it
    world.clock.now += timedelta(seconds=11)
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0
    [credit] = world.credits
    assert credit.reference_id == "nowpayments:5077125051"


@pytest.mark.parametrize(
    ("raw", "signature", "code"),
    [
        # No signature can cover a body that is not a JSON object: the contract's 401.
        (b"not json", "0" * 128, "invalid_signature"),
        (b"[]", "0" * 128, "invalid_signature"),
        (b'{"payment_id":1,"payment_id":2}', "0" * 128, "invalid_signature"),
        (b"{}", None, "invalid_signature"),
    ],
)
async def test_refused_bodies_are_recorded(raw: bytes, signature: str | None, code: str) -> None:
    world = World()
    with pytest.raises(IpnRejected) as refused:
        await world.handler.handle(IpnRequest(raw, signature, {}, "10.0.0.1"))
    assert refused.value.code == code
    assert [r.verdict for r in world.ipn_log.records] == [code]


async def test_unauthenticated_posts_are_capped_in_size_and_rate_before_being_stored() -> None:
    world = World()
    world.handler.untrusted_limit = RateLimiter(
        per_sender=3, overall=5, window=timedelta(minutes=1), clock=world.clock
    )
    with pytest.raises(IpnRejected) as too_large:
        await world.handler.handle(
            IpnRequest(b"x" * (MAX_IPN_BYTES + 1), "0" * 128, {}, "10.0.0.9")
        )
    assert too_large.value.code == "body_too_large"
    assert world.ipn_log.records == []  # never stored
    junk = b'{"junk": "' + b"y" * 8000 + b'"}'
    codes = []
    for sender in ["10.0.0.1"] * 4 + ["10.0.0.2"] * 2 + ["10.0.0.3"]:
        with pytest.raises(IpnRejected) as refused:
            await world.handler.handle(IpnRequest(junk, "0" * 128, {}, sender))
        codes.append(refused.value.code)
    assert codes == ["invalid_signature"] * 3 + ["rate_limited"] + ["invalid_signature"] * 2 + [
        "rate_limited"  # everyone together: 5 a minute
    ]
    assert len(world.ipn_log.records) == 5
    assert all(r.truncated and len(r.raw_body) <= 2048 for r in world.ipn_log.records)
    # A correctly signed IPN is never rate limited, and a new window lets senders in again.
    assert await world.handler.handle(signed(body("waiting"))) == "pending"
    world.clock.now += timedelta(minutes=1)
    with pytest.raises(IpnRejected) as later:
        await world.handler.handle(IpnRequest(junk, "0" * 128, {}, "10.0.0.1"))
    assert later.value.code == "invalid_signature"


async def test_a_signed_ipn_refused_after_its_signature_is_kept_whole_not_rate_limited() -> None:
    """Refused after its signature matched (a field missing, text nothing could store, a
    re-deposit whose parent payment no order holds): answered with its 4xx, kept whole and
    trusted with that verdict, and never counted against the cap on unauthenticated posts (it
    was, so after 30 a minute such IPNs were answered 429 and not kept, and each was cut to 2 KiB
    and kept as untrusted)."""
    world = World()
    world.handler.untrusted_limit = RateLimiter(
        per_sender=3, overall=5, window=timedelta(minutes=1), clock=world.clock
    )
    padding = "p" * 4000  # longer than what is kept of an unauthenticated body
    no_order = {**body("finished"), "note": padding}
    del no_order["order_id"]
    orphan = {**no_order, "parent_payment_id": JsonNumber("5077125999")}  # no order holds it
    raw_text = b'{"payment_id":5077125051,"order_id":"dep_alice_1","payment_status":"x\\ud800"}'
    bad_text = parse_json(raw_text)
    assert isinstance(bad_text, dict)
    requests = [signed(no_order)] * 4 + [signed(orphan)] * 4
    requests += [IpnRequest(raw_text, sign(bad_text, SECRET), {}, "10.0.0.1")] * 4
    codes = []
    for request in requests:
        with pytest.raises(IpnRejected) as refused:
            await world.handler.handle(request)
        codes.append(refused.value.code)
    assert codes == ["missing_field"] * 8 + ["invalid_text"] * 4
    records = list(world.ipn_log.records)
    assert [(r.verdict, r.trusted, r.truncated) for r in records] == [
        (code, True, False) for code in codes
    ]
    assert [r.raw_body.encode() for r in records] == [r.raw_body for r in requests]
    # The cap on unauthenticated posts is untouched: the sender's first three still come in.
    unsigned = []
    for _ in range(4):
        with pytest.raises(IpnRejected) as refused:
            await world.handler.handle(IpnRequest(b"{}", "0" * 128, {}, "10.0.0.1"))
        unsigned.append(refused.value.code)
    assert unsigned == ["invalid_signature"] * 3 + ["rate_limited"]
    assert [r.trusted for r in world.ipn_log.records[len(records) :]] == [False] * 3


async def test_missing_fields_of_a_signed_body_are_refused() -> None:
    world = World()
    content = body("finished")
    del content["order_id"]
    with pytest.raises(IpnRejected) as refused:
        await world.handler.handle(signed(content))
    assert refused.value.code == "missing_field"


async def test_sender_allow_list() -> None:
    world = World(allowed=("192.0.2.0/24",))
    assert await world.handler.handle(signed(body("waiting"), ip="192.0.2.7")) == "pending"
    with pytest.raises(Forbidden):
        await world.handler.handle(signed(body("finished"), ip="198.51.100.1"))
    assert world.credits == []
