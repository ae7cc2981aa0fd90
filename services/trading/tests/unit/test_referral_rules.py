"""Binding rules, who paid a fee, and the commission on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging import LedgerTransaction, Posting
from shared.money import get_currency
from trading.referrals.domain.bindings import Binding, already_bound, check_binding
from trading.referrals.domain.commissions import (
    commission_amount,
    commission_reference,
    commissions_due,
    fees_charged,
)
from trading.referrals.domain.errors import ReferralRefused

RATE = Decimal("0.20")
BOUND_AT = datetime(2026, 11, 30, 10, tzinfo=UTC)
AFTER = BOUND_AT + timedelta(minutes=1)


def test_a_user_binds_to_someone_else() -> None:
    assert check_binding("invitee", "referrer") == "referrer"


def test_binding_to_oneself_is_refused() -> None:
    with pytest.raises(ReferralRefused) as refused:
        check_binding("alice", "alice")
    assert (refused.value.code, refused.value.http_status) == ("self_referral", 400)


@pytest.mark.parametrize(
    "referrer", ["", " ", "a b", "x" * 201, None, 42, "tab\there", "\ud800", "bob\udfff"]
)
def test_a_referrer_id_that_is_not_a_user_id_is_refused(referrer: object) -> None:
    with pytest.raises(ReferralRefused) as refused:
        check_binding("alice", referrer)
    assert refused.value.code == "invalid_referrer"


def test_a_second_binding_is_a_conflict() -> None:
    refused = already_bound(Binding("alice", "bob", BOUND_AT))
    assert (refused.code, refused.http_status) == ("already_bound", 409)


def test_the_commission_is_the_share_rounded_down() -> None:
    btc = get_currency("BTC")
    assert commission_amount(Decimal("0.00001"), RATE, btc) == Decimal("0.000002")
    # 0.00000013 × 0.2 = 0.000000026 → 0.00000002 (down, never up)
    assert commission_amount(Decimal("0.00000013"), RATE, btc) == Decimal("0.00000002")
    # one satoshi of fee: a fifth of a satoshi is dust, nothing is paid
    assert commission_amount(Decimal("0.00000001"), RATE, btc) == 0
    assert commission_amount(Decimal("1.5"), RATE, get_currency("GBP")) == Decimal("0.30")
    eth = get_currency("ETH")
    assert commission_amount(Decimal("0.000000000000000007"), RATE, eth) == Decimal(
        "0.000000000000000001"
    )


@given(
    units=st.integers(min_value=1, max_value=10**24),
    rate_bp=st.integers(min_value=0, max_value=10_000),
    code=st.sampled_from(["BTC", "ETH", "USDT", "GBP"]),
)
def test_the_commission_never_exceeds_the_share(units: int, rate_bp: int, code: str) -> None:
    currency = get_currency(code)
    fee = Decimal(units).scaleb(-currency.scale)
    rate = Decimal(rate_bp).scaleb(-4)
    amount = commission_amount(fee, rate, currency)
    exact = Fraction(fee) * Fraction(rate)
    assert Fraction(amount) <= exact < Fraction(amount) + Fraction(1, 10**currency.scale)
    assert amount <= fee


def _tx(
    tx_type: str,
    kind: str,
    user: str,
    postings: list[tuple[str, str, str]],
    *,
    to_user: str | None = None,
    at: datetime = AFTER,
    tx_id: str = "tx1",
) -> LedgerTransaction:
    return LedgerTransaction(
        transaction_id=tx_id,
        command_id="c1",
        type=kind,
        transaction_type=tx_type,
        reference_id="r1",
        user_id=user,
        to_user=to_user,
        postings=[Posting(account=a, currency=c, amount=Decimal(v)) for a, c, v in postings],
        occurred_at=at,
    )


SWAP = _tx(
    "swap",
    "exchange",
    "invitee",
    [
        ("user:invitee:available", "BTC", "-0.01"),
        ("platform:fees", "BTC", "0.00001"),
        ("platform:liquidity", "BTC", "0.00999"),
        ("platform:liquidity", "ETH", "-0.3"),
        ("user:invitee:available", "ETH", "0.3"),
    ],
)
# A spot fill: buyer pays 520 GBP for 0.01 BTC; the seller's fee is in GBP, the buyer's in BTC.
SPOT = _tx(
    "spot_trade",
    "settle_trade",
    "buyer",
    [
        ("user:buyer:locked", "GBP", "-520"),
        ("user:seller:available", "GBP", "518.96"),
        ("platform:fees", "GBP", "1.04"),
        ("user:seller:locked", "BTC", "-0.01"),
        ("user:buyer:available", "BTC", "0.00999"),
        ("platform:fees", "BTC", "0.00001"),
    ],
    to_user="seller",
)


def test_an_exchange_fee_is_the_payers() -> None:
    assert [(f.payer_id, f.currency, f.fee) for f in fees_charged(SWAP)] == [
        ("invitee", "BTC", Decimal("0.00001"))
    ]


def test_each_side_of_a_spot_fill_pays_the_fee_in_what_it_receives() -> None:
    assert [(f.payer_id, f.currency, f.fee) for f in fees_charged(SPOT)] == [
        ("buyer", "BTC", Decimal("0.00001")),
        ("seller", "GBP", Decimal("1.04")),
    ]


def test_a_p2p_release_fee_is_the_sellers() -> None:
    release = _tx(
        "p2p_completed",
        "transfer_locked",
        "seller",
        [
            ("user:seller:locked", "BTC", "-0.01001"),
            ("user:buyer:available", "BTC", "0.01"),
            ("platform:fees", "BTC", "0.00001"),
        ],
        to_user="buyer",
    )
    assert [(f.payer_id, f.fee) for f in fees_charged(release)] == [("seller", Decimal("0.00001"))]


def _bound(*invitees: str) -> dict[str, Binding]:
    return {i: Binding(i, f"ref-of-{i}", BOUND_AT) for i in invitees}


def test_a_bound_invitees_fee_pays_the_referrer_with_the_contracts_metadata() -> None:
    (due,) = commissions_due(SWAP, _bound("invitee").get, RATE)
    assert (due.referrer_id, due.currency, due.amount) == (
        "ref-of-invitee",
        "BTC",
        Decimal("0.000002"),
    )
    assert due.reference_id == commission_reference("tx1", "BTC") == "referral:tx1:BTC"
    assert due.metadata() == {
        "referred_user_id": "invitee",
        "source_transaction_id": "tx1",
        "source_transaction_type": "swap",
        "fee": "0.00001",
        "rate": "0.2",
    }


def test_both_sides_of_a_fill_can_pay_their_own_referrers_once_each() -> None:
    dues = commissions_due(SPOT, _bound("buyer", "seller").get, RATE)
    assert [(d.referrer_id, d.currency, d.amount, d.reference_id) for d in dues] == [
        ("ref-of-buyer", "BTC", Decimal("0.000002"), "referral:tx1:BTC"),
        ("ref-of-seller", "GBP", Decimal("0.20"), "referral:tx1:GBP"),
    ]
    only_seller = commissions_due(SPOT, _bound("seller").get, RATE)
    assert [d.referred_user_id for d in only_seller] == ["seller"]


def test_nothing_is_owed_for_unbound_users_earlier_fees_dust_or_payouts() -> None:
    assert commissions_due(SWAP, _bound("someone-else").get, RATE) == []
    before = _tx(
        "swap",
        "exchange",
        "invitee",
        [("platform:fees", "BTC", "0.001")],
        at=BOUND_AT - timedelta(seconds=1),
    )
    assert commissions_due(before, _bound("invitee").get, RATE) == []
    at_binding = _tx(
        "swap", "exchange", "invitee", [("platform:fees", "BTC", "0.001")], at=BOUND_AT
    )
    assert len(commissions_due(at_binding, _bound("invitee").get, RATE)) == 1
    dust = _tx("swap", "exchange", "invitee", [("platform:fees", "BTC", "0.00000004")])
    assert commissions_due(dust, _bound("invitee").get, RATE) == []
    payout = _tx(
        "referral_commission",
        "credit",
        "invitee",
        [("platform:fees", "BTC", "-0.000002"), ("user:invitee:available", "BTC", "0.000002")],
    )
    assert commissions_due(payout, _bound("invitee").get, RATE) == []
    no_fee = _tx(
        "deposit_nowpayments", "credit", "invitee", [("user:invitee:available", "BTC", "1")]
    )
    assert commissions_due(no_fee, _bound("invitee").get, RATE) == []
