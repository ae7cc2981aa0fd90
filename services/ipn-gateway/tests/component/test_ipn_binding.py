"""One deposit, one credit: an IPN is bound to the payment create-deposit stored for its order.

The signature covers the parsed numbers, not their spelling: `5077125051`, `5077125051.0` and
`50771250510e-1` carry the same valid signature, so each number means the value JavaScript reads:
a respelled replay is the same payment, and an amount is the one that was signed.
"""

from __future__ import annotations

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
from ipn_gateway.application.records import CreatedPayment, DepositOrder
from ipn_gateway.domain.errors import IpnRejected
from ipn_gateway.domain.js_json import JsonNumber, JsonValue, js_stringify
from ipn_gateway.domain.payments import ConfirmationPolicy, PaymentStatus
from ipn_gateway.domain.signature import sign
from shared.messaging import CreditCommand

SECRET = "binding-ipn-secret"
NOW = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
PAYMENT_ID = "5077125051"


def world() -> tuple[IpnHandler, RecordingPublisher]:
    orders = MemoryDepositOrders()
    orders.orders["dep_alice"] = DepositOrder(
        order_id="dep_alice",
        user_id="alice",
        pay_currency="btc",
        price_amount="100",
        price_currency="usd",
        created_at=NOW,
        payment=CreatedPayment(
            payment_id=PAYMENT_ID,
            pay_address="bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            pay_currency="btc",
            pay_amount="0.0015",
            price_amount="100",
            price_currency="usd",
        ),
    )
    publisher = RecordingPublisher()
    handler = IpnHandler(
        secret=SECRET,
        policy=ConfirmationPolicy(),
        orders=orders,
        payments=MemoryPayments(),
        ipn_log=MemoryIpnLog(),
        publisher=publisher,
        clock=lambda: NOW,
        reviews=MemoryReviews(),
    )
    return handler, publisher


def finished(payment_id_text: str) -> dict[str, JsonValue]:
    return {
        "payment_id": JsonNumber(payment_id_text),
        "payment_status": "finished",
        "pay_currency": "btc",
        "order_id": "dep_alice",
        "actually_paid": JsonNumber("0.0015"),
        "outcome_amount": JsonNumber("0.0015"),
        "outcome_currency": "btc",
    }


def raw_with(payment_id_text: str) -> IpnRequest:
    content = finished(payment_id_text)
    # Written by hand so the respelled number reaches the gateway exactly as spelled.
    raw = (
        f'{{"payment_id":{payment_id_text},"payment_status":"finished","pay_currency":"btc",'
        '"order_id":"dep_alice","actually_paid":0.0015,"outcome_amount":0.0015,'
        '"outcome_currency":"btc"}'
    ).encode()
    signature = sign(content, SECRET)
    return IpnRequest(raw, signature, {"x-nowpayments-sig": signature}, "10.0.0.1")


async def test_a_respelled_payment_id_replayed_credits_once() -> None:
    handler, publisher = world()
    spellings = ("5077125051", "5077125051.0", "50771250510e-1")
    signatures = {sign(finished(text), SECRET) for text in spellings}
    assert len(signatures) == 1  # the attack: one captured signature fits every spelling
    # One payment id, three spellings: the respelled replays are the same payment.
    answers = [await handler.handle(raw_with(text)) for text in spellings]
    assert answers == ["credited", "duplicate", "duplicate"]
    credits = [c for c in publisher.published if isinstance(c, CreditCommand)]
    assert [(c.reference_id, c.amount) for c in credits] == [
        (f"nowpayments:{PAYMENT_ID}", Decimal("0.0015"))
    ]


async def test_an_amount_means_the_value_javascript_signed_whatever_its_spelling() -> None:
    handler, publisher = world()
    # `0.0015000000000000000312` is the double 0.0015 to JavaScript: same signature, same credit.
    content = {**finished(PAYMENT_ID), "outcome_amount": JsonNumber("0.0015000000000000000312")}
    signature = sign(content, SECRET)
    assert signature == sign(finished(PAYMENT_ID), SECRET)
    raw = js_stringify(finished(PAYMENT_ID)).replace(
        '"outcome_amount":0.0015', '"outcome_amount":0.0015000000000000000312'
    )
    assert "0.0015000000000000000312" in raw
    request = IpnRequest(raw.encode(), signature, {"x-nowpayments-sig": signature}, "10.0.0.1")
    assert await handler.handle(request) == "credited"
    [credit] = [c for c in publisher.published if isinstance(c, CreditCommand)]
    assert credit.amount == Decimal("0.0015")


def signed(content: dict[str, JsonValue]) -> IpnRequest:
    signature = sign(content, SECRET)
    raw = js_stringify(content).encode()
    return IpnRequest(raw, signature, {"x-nowpayments-sig": signature}, "10.0.0.1")


async def test_another_payment_id_for_the_order_credits_nothing_and_is_kept_for_review() -> None:
    handler, publisher = world()
    other = {**finished("5077125099")}
    assert await handler.handle(signed(other)) == "unmatched"
    assert await handler.handle(signed(other)) == "unmatched"  # the same IPN: one item
    assert publisher.published == []
    [item] = await handler.reviews.list("open", 10)
    assert (item.reason, item.payment_id, item.bound, item.user_id) == (
        "payment_id_mismatch",
        "5077125099",
        False,
        "alice",
    )
    assert await handler.payments.get("5077125099") is None


async def test_a_re_deposit_linked_by_parent_payment_id_credits_under_its_own_id() -> None:
    handler, publisher = world()
    assert await handler.handle(signed(finished(PAYMENT_ID))) == "credited"
    child = {**finished("5077125100"), "parent_payment_id": JsonNumber(PAYMENT_ID)}
    assert await handler.handle(signed(child)) == "credited"
    assert await handler.handle(signed(child)) == "duplicate"
    credits = [c.reference_id for c in publisher.published if isinstance(c, CreditCommand)]
    assert credits == [f"nowpayments:{PAYMENT_ID}", "nowpayments:5077125100"]


async def test_a_re_deposit_naming_only_its_parent_credits_the_parents_order() -> None:
    handler, publisher = world()
    child = {**finished("5077125100"), "parent_payment_id": JsonNumber(PAYMENT_ID)}
    del child["order_id"]
    assert await handler.handle(signed(child)) == "credited"
    [credit] = [c for c in publisher.published if isinstance(c, CreditCommand)]
    assert (credit.user_id, credit.reference_id, credit.metadata["order_id"]) == (
        "alice",
        "nowpayments:5077125100",
        "dep_alice",
    )
    # A parent no stored order holds names no order: refused, nothing credited.
    orphan = {**child, "payment_id": JsonNumber("5077125101")}
    orphan["parent_payment_id"] = JsonNumber("5077125999")
    with pytest.raises(IpnRejected) as refused:
        await handler.handle(signed(orphan))
    assert refused.value.code == "missing_field"
    assert len(publisher.published) == 1


async def test_a_payment_in_another_coin_than_the_order_credits_nothing() -> None:
    handler, publisher = world()
    content = {**finished(PAYMENT_ID), "pay_currency": "trx"}
    assert await handler.handle(signed(content)) == "unmatched"
    assert publisher.published == []
    [item] = await handler.reviews.list(None, 10)
    assert item.reason == "pay_currency_mismatch"


async def test_confirmation_policy_follows_the_coin_that_was_paid() -> None:
    """BTC credits at finished, even when the outcome is converted into a coin (USDT) whose
    policy would credit earlier: the reorg risk is on the chain that was paid on."""
    handler, publisher = world()
    handler.policy = ConfirmationPolicy(credit_at={"usdt": PaymentStatus.CONFIRMED})
    confirmed = {
        **finished(PAYMENT_ID),
        "payment_status": "confirmed",
        "outcome_amount": JsonNumber("100"),
        "outcome_currency": "usdt",
    }
    assert await handler.handle(signed(confirmed)) == "pending"
    assert publisher.published == []
    assert await handler.handle(signed({**confirmed, "payment_status": "finished"})) == "credited"
