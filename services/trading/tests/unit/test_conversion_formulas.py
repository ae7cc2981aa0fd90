"""The contract's formulas with awkward numbers, pinned by hand and checked against exact
rational arithmetic (fractions) for many generated inputs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.money import get_currency
from trading.conversions.domain import (
    ConversionKind,
    Quote,
    Terms,
    fee_up,
    make_quote,
    rate_down,
    receive_down,
)
from trading.errors import Invalid
from trading.prices.domain import Price

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
BTC, ETH, GBP, USDT = (get_currency(c) for c in ("BTC", "ETH", "GBP", "USDT"))
SWAP = Terms(Decimal("0.001"), Decimal("0.005"), timedelta(seconds=10))
EXPRESS = Terms(Decimal("0.015"), Decimal("0.01"), timedelta(seconds=30))


def price(code: str, value: str) -> Price:
    return Price(code, Decimal(value), NOW, "test")


def quote(
    pay: str, amount: str, receive: str, prices: dict[str, str], terms: Terms = SWAP
) -> Quote:
    return make_quote(
        quote_id="q1",
        kind=ConversionKind.SWAP,
        user_id="amy",
        pay=get_currency(pay),
        pay_amount=Decimal(amount),
        receive=get_currency(receive),
        pay_price=price(pay, prices[pay]),
        receive_price=price(receive, prices[receive]),
        terms=terms,
        now=NOW,
    )


def test_the_contract_example_btc_to_eth_has_a_rate_that_does_not_terminate() -> None:
    # 52000 × 0.995 / 2800 = 18.478571428571428571428571… (repeating): floored at 18 decimals.
    q = quote("BTC", "0.01", "ETH", {"BTC": "52000", "ETH": "2800"})
    assert q.fee == Decimal("0.00001")
    assert q.rate == Decimal("18.478571428571428571")
    assert q.receive_amount == Decimal("0.184600928571428571")
    assert q.expires_at == NOW + timedelta(seconds=10)


def test_eighteen_decimal_eth_pays_a_fee_rounded_up_at_the_last_wei() -> None:
    # 1.123456789012345678 × 0.001 = 0.001123456789012345678 → 0.001123456789012346 (up).
    q = quote("ETH", "1.123456789012345678", "BTC", {"BTC": "52000", "ETH": "2800"})
    assert q.fee == Decimal("0.001123456789012346")
    assert q.rate == Decimal("0.053576923076923076")
    assert q.receive_amount == Decimal("0.06013116")  # BTC has 8 decimals: floored


def test_a_fee_below_one_wei_is_one_wei_and_rounding_never_favours_the_user() -> None:
    assert fee_up(Decimal("0.000000000000001001"), Decimal("0.001"), ETH) == Decimal("2E-18")
    assert fee_up(Decimal("0.000000000000001"), Decimal("0.001"), ETH) == Decimal("1E-18")
    assert fee_up(Decimal("0.00000001"), Decimal("0.001"), BTC) == Decimal("0.00000001")


def test_one_wei_buys_nothing_and_is_refused() -> None:
    with pytest.raises(Invalid) as refused:
        quote("ETH", "0.000000000000000001", "BTC", {"BTC": "52000", "ETH": "2800"})
    assert refused.value.code == "amount_too_small"


def test_express_buy_rate_is_crypto_per_pound() -> None:
    q = make_quote(
        quote_id="q2",
        kind=ConversionKind.EXPRESS_BUY,
        user_id="amy",
        pay=GBP,
        pay_amount=Decimal("100.00"),
        receive=BTC,
        pay_price=price("GBP", "1"),
        receive_price=price("BTC", "52000"),
        terms=EXPRESS,
        now=NOW,
    )
    assert q.fee == Decimal("1.50")
    assert q.rate == Decimal("0.000019038461538461")  # 0.99 / 52000, floored
    assert q.receive_amount == Decimal("0.00187528")  # 98.50 × rate = 0.0018752884…
    assert q.expires_at == NOW + timedelta(seconds=30)


def test_a_fee_of_one_penny_rounds_up_from_a_fraction_of_a_penny() -> None:
    assert fee_up(Decimal("0.01"), Decimal("0.015"), GBP) == Decimal("0.01")
    assert fee_up(Decimal("1.01"), Decimal("0.015"), GBP) == Decimal("0.02")  # 0.01515


def test_same_currency_is_refused() -> None:
    with pytest.raises(Invalid) as refused:
        quote("BTC", "1", "BTC", {"BTC": "52000"})
    assert refused.value.code == "same_currency"


def test_a_huge_rate_keeps_eighteen_decimals_exactly() -> None:
    # Far beyond 28 significant digits (Python's default context would round it).
    rate = rate_down(Decimal("99999999.99999999"), Decimal("0.00000007"), Decimal("0.005"))
    exact = Fraction("99999999.99999999") * Fraction("0.995") / Fraction("0.00000007")
    assert Fraction(rate) == Fraction(math.floor(exact * 10**18), 10**18)


def _floor(value: Fraction, places: int) -> Fraction:
    return Fraction(math.floor(value * 10**places), 10**places)


def _ceil(value: Fraction, places: int) -> Fraction:
    return Fraction(math.ceil(value * 10**places), 10**places)


prices_ = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=6)
rates_ = st.decimals(min_value=Decimal(0), max_value=Decimal("0.05"), places=4)


@given(
    amount=st.decimals(min_value=Decimal("1E-18"), max_value=Decimal("1000"), places=18),
    pay_price=prices_,
    receive_price=prices_,
    fee_rate=rates_,
    spread=rates_,
)
def test_every_figure_equals_exact_arithmetic_rounded_as_the_contract_says(
    amount: Decimal, pay_price: Decimal, receive_price: Decimal, fee_rate: Decimal, spread: Decimal
) -> None:
    fee = fee_up(amount, fee_rate, ETH)
    rate = rate_down(pay_price, receive_price, spread)
    received = receive_down(amount, fee, rate, USDT)
    assert Fraction(fee) == _ceil(Fraction(amount) * Fraction(fee_rate), 18)
    exact_rate = Fraction(pay_price) / Fraction(receive_price) * (1 - Fraction(spread))
    assert Fraction(rate) == _floor(exact_rate, 18)
    # From the rate as returned: a client can recompute it.
    assert Fraction(received) == _floor((Fraction(amount) - Fraction(fee)) * Fraction(rate), 6)
    assert rate.as_tuple().exponent == -18  # never more than 18 decimals
