"""Seeded random IPN sequences per payment against a model that credits each deposit once.

Each payment lives one NOWPayments life (a success path, possibly through partially_paid, or a
failure); its IPNs arrive duplicated, reordered, and some respelled (`5077125051.0`, `15e-4`:
validly signed all the same). The model: a respelled IPN is refused and changes nothing; the
credited total of a payment is the outcome of the highest status that credits it (outcomes never
shrink along a life), credited under distinct references, whatever the order of arrival.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from ipn_gateway.adapters.memory import (
    MemoryDepositOrders,
    MemoryIpnLog,
    MemoryPayments,
    MemoryReviews,
    RecordingPublisher,
)
from ipn_gateway.application.ipn import IpnHandler, IpnRequest
from ipn_gateway.application.records import CreatedPayment, DepositOrder
from ipn_gateway.domain.js_json import JsonNumber, JsonValue
from ipn_gateway.domain.payments import STATUS_RANK, ConfirmationPolicy, PaymentStatus
from ipn_gateway.domain.signature import sign
from shared.messaging import CreditCommand

SECRET: Final = "sequence-ipn-secret"
NOW: Final = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
SEEDS: Final = range(12)
PAYMENTS_PER_SEED: Final = 6
S = PaymentStatus
POLICY: Final = ConfirmationPolicy(credit_at={"btc": S.CONFIRMED})  # ltc: at finished
LIVES: Final = [
    [S.WAITING, S.CONFIRMING, S.CONFIRMED, S.SENDING, S.FINISHED],
    [S.WAITING, S.CONFIRMING, S.CONFIRMED, S.SENDING, S.PARTIALLY_PAID, S.FINISHED],
    [S.WAITING, S.CONFIRMING, S.FINISHED],
    [S.WAITING, S.EXPIRED],
    [S.WAITING, S.CONFIRMING, S.FAILED],
]


def raw_text(value: JsonValue) -> str:
    """JSON with every number written exactly as its JsonNumber text."""
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{raw_text(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def respell(text: str, rng: random.Random) -> str:
    """The same number, not as JavaScript writes it."""
    digits = Decimal(text)
    return rng.choice([f"{text}0" if "." in text else f"{text}.0", f"{digits * 10}e-1"])


@dataclass
class Life:
    payment_id: str
    order_id: str
    coin: str
    outcomes: dict[PaymentStatus, str]

    def expected_total(self, delivered: set[PaymentStatus]) -> Decimal:
        crediting = [s for s in delivered if POLICY.credits(s, self.coin)]
        if not crediting:
            return Decimal(0)
        return Decimal(self.outcomes[max(crediting, key=lambda s: STATUS_RANK[s])])


def make_life(rng: random.Random, index: int) -> Life:
    statuses = rng.choice(LIVES)
    coin = rng.choice(["btc", "ltc"])
    outcome = Decimal(rng.randrange(1000, 90000)) / 10**7
    outcomes = {}
    for status in statuses:
        if status in (S.FINISHED,) and rng.random() < 0.3:
            outcome += Decimal(rng.randrange(1, 500)) / 10**7  # the rest arrived
        outcomes[status] = str(outcome.normalize())
    return Life(str(5_000_000_000 + index), f"dep_{index}", coin, outcomes)


def body(life: Life, status: PaymentStatus) -> dict[str, JsonValue]:
    return {
        "payment_id": JsonNumber(life.payment_id),
        "payment_status": status.value,
        "pay_currency": life.coin,
        "order_id": life.order_id,
        "actually_paid": JsonNumber(life.outcomes[status]),
        "outcome_amount": JsonNumber(life.outcomes[status]),
        "outcome_currency": life.coin,
    }


def request(content: dict[str, JsonValue]) -> IpnRequest:
    signature = sign(content, SECRET)
    return IpnRequest(raw_text(content).encode(), signature, {}, "10.0.0.1")


async def test_random_ipn_sequences_credit_each_deposit_once() -> None:
    credited_lives = topped_up = respelled_deliveries = 0
    for seed in SEEDS:
        rng = random.Random(seed)
        orders, payments, publisher = MemoryDepositOrders(), MemoryPayments(), RecordingPublisher()
        handler = IpnHandler(
            secret=SECRET,
            policy=POLICY,
            orders=orders,
            payments=payments,
            ipn_log=MemoryIpnLog(),
            publisher=publisher,
            clock=lambda: NOW,
            reviews=MemoryReviews(),
        )
        lives = [make_life(rng, seed * 100 + i) for i in range(PAYMENTS_PER_SEED)]
        deliveries: list[tuple[Life, PaymentStatus, bool]] = []
        for life in lives:
            created = CreatedPayment(life.payment_id, "addr", life.coin, "1", "100", "usd")
            orders.orders[life.order_id] = DepositOrder(
                life.order_id, "user_" + life.order_id, life.coin, "100", "usd", NOW, created
            )
            for status in life.outcomes:
                for _ in range(rng.randrange(1, 4)):  # duplicates
                    deliveries.append((life, status, rng.random() < 0.25))  # respelled?
        # Mostly in order, with local reorderings (NOWPayments retries overtake each other).
        for _ in range(len(deliveries)):
            i = rng.randrange(len(deliveries) - 1)
            if rng.random() < 0.3:
                deliveries[i], deliveries[i + 1] = deliveries[i + 1], deliveries[i]

        delivered: dict[str, set[PaymentStatus]] = {life.payment_id: set() for life in lives}
        for life, status, respelled in deliveries:
            content: dict[str, Any] = body(life, status)
            if respelled:
                # The same payment and amount: one meaning, whatever the spelling.
                field = rng.choice(["payment_id", "outcome_amount"])
                content[field] = JsonNumber(respell(content[field].text, rng))
                respelled_deliveries += 1
            await handler.handle(request(content))
            delivered[life.payment_id].add(status)

        credits = [c for c in publisher.published if isinstance(c, CreditCommand)]
        references = [c.reference_id for c in credits]
        assert len(references) == len(set(references)), (seed, references)
        for life in lives:
            mine = [
                c for c in credits if c.reference_id.startswith(f"nowpayments:{life.payment_id}")
            ]
            total = sum((c.amount for c in mine), Decimal(0))
            expected = life.expected_total(delivered[life.payment_id])
            assert total == expected, (seed, life, sorted(delivered[life.payment_id]), mine)
            assert all(c.user_id == "user_" + life.order_id for c in mine)
            credited_lives += bool(mine)
            topped_up += len(mine) > 1
    # The sequences exercise what they claim to (a model never tried proves nothing).
    assert credited_lives >= 20
    assert topped_up >= 3
    assert respelled_deliveries >= 20
