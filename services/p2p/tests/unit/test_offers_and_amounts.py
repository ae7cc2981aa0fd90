"""Offer validation and the amounts of a trade: fee rounded up, fiat rounded half-up, exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from p2p.domain.errors import Refused
from p2p.domain.offers import (
    OfferTerms,
    check_fee_rate,
    fiat_amount,
    trade_amounts,
    trade_fee,
    validate_offer,
)
from shared.money import get_currency

D = Decimal
BTC, GBP = get_currency("BTC"), get_currency("GBP")
OFFER: dict[str, Any] = {
    "currency": "btc",
    "fiat_currency": "GBP",
    "price": "52000.00",
    "min_amount": "0.001",
    "max_amount": "0.5",
    "payment_methods": ["bank_transfer"],
    "payment_window_minutes": 15,
}


def terms(**changes: Any) -> OfferTerms:
    return validate_offer(**{**OFFER, **changes})


def test_the_contract_example() -> None:
    offer = terms()
    assert (offer.currency, offer.fiat_currency, offer.price) == ("BTC", "GBP", D("52000"))
    amounts = trade_amounts(offer, "0.01", D("0.001"))
    assert amounts.fee == D("0.00001")
    assert amounts.fiat_amount == D("520.00")
    assert amounts.escrowed == D("0.01001")


@pytest.mark.parametrize(
    ("amount", "fee"),
    [
        ("0.00000001", "0.00000001"),  # 1e-11 rounds UP to one satoshi
        ("0.001", "0.000001"),
        ("0.0123457", "0.00001235"),  # 0.0000123457 up
        ("0.5", "0.0005"),
    ],
)
def test_fee_rounds_up_to_the_coins_scale(amount: str, fee: str) -> None:
    assert trade_fee(D(amount), D("0.001"), BTC) == D(fee)


@pytest.mark.parametrize(
    ("amount", "price", "fiat"),
    [
        ("0.00012345", "52000", "6.42"),  # 6.4194 → 6.42
        ("0.0001", "52000.05", "5.20"),  # 5.200005 → 5.20
        ("0.00000125", "52000", "0.07"),  # 0.065 → 0.07: half goes up
        ("0.00000375", "52000", "0.20"),  # 0.195 → 0.20 (half-even would also say .20)
        ("0.00000425", "52000", "0.22"),  # 0.221 → 0.22
        ("0.00002625", "52000", "1.37"),  # 1.365 → 1.37 (half-even would say 1.36)
    ],
)
def test_fiat_amount_rounds_half_up(amount: str, price: str, fiat: str) -> None:
    assert fiat_amount(D(amount), D(price), GBP) == D(fiat)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"currency": "GBP"}, "not_a_crypto_currency"),
        ({"fiat_currency": "BTC"}, "not_a_fiat_currency"),
        ({"currency": "DOGE"}, "unknown_currency"),
        ({"price": "0"}, "amount_not_positive"),
        ({"price": 52000.5}, "amount_not_a_string"),
        ({"price": "1.123456789"}, "amount_too_precise"),
        ({"min_amount": "0.000000001"}, "amount_too_precise"),
        ({"min_amount": "1", "max_amount": "0.5"}, "invalid_amount_range"),
        ({"payment_methods": []}, "invalid_payment_methods"),
        ({"payment_methods": ["Bank Transfer"]}, "invalid_payment_methods"),
        ({"payment_methods": "bank_transfer"}, "invalid_payment_methods"),
        ({"payment_window_minutes": 0}, "invalid_payment_window"),
        ({"payment_window_minutes": 61}, "invalid_payment_window"),
        ({"payment_window_minutes": "15"}, "invalid_payment_window"),
        ({"payment_window_minutes": True}, "invalid_payment_window"),
        ({"payment_window_minutes": 15.5}, "invalid_payment_window"),
        ({"payment_window_minutes": float("nan")}, "invalid_payment_window"),
        ({"payment_window_minutes": float("inf")}, "invalid_payment_window"),
        ({"payment_window_minutes": D("NaN")}, "invalid_payment_window"),
        ({"payment_window_minutes": D("1E+999999999")}, "invalid_payment_window"),  # at once
        ({"payment_window_minutes": 60.0000001}, "invalid_payment_window"),
        ({"payment_window_minutes": None}, "invalid_payment_window"),
    ],
)
def test_offer_refusals(changes: dict[str, Any], code: str) -> None:
    with pytest.raises(Refused) as refused:
        terms(**changes)
    assert refused.value.code == code


@pytest.mark.parametrize("window", [1, 60])
def test_window_bounds_are_allowed(window: int) -> None:
    assert terms(payment_window_minutes=window).payment_window_minutes == window


@pytest.mark.parametrize("window", [15, 15.0, D("15"), D("1.5E+1"), D("15.000")])
def test_a_window_is_a_number_however_written(window: object) -> None:
    """`15.0` and `1.5e1` are 15 minutes, as `15` is: they were refused."""
    kept = terms(payment_window_minutes=window).payment_window_minutes
    assert (kept, type(kept)) == (15, int)


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("0.0009", "amount_out_of_range"),
        ("0.50000001", "amount_out_of_range"),
        ("0.000000001", "amount_too_precise"),
        ("-0.01", "amount_not_positive"),
        ("NaN", "amount_not_a_number"),
    ],
)
def test_trade_amount_refusals(amount: str, code: str) -> None:
    with pytest.raises(Refused) as refused:
        trade_amounts(terms(), amount, D("0.001"))
    assert refused.value.code == code


def test_range_bounds_are_allowed() -> None:
    assert trade_amounts(terms(), "0.001", D("0.001")).amount == D("0.001")
    assert trade_amounts(terms(), "0.5", D("0.001")).amount == D("0.5")


def test_fee_rate_bounds() -> None:
    assert check_fee_rate(D("0")) == 0
    for bad in ("1", "-0.001", "NaN"):
        with pytest.raises(ValueError, match="fee rate"):
            check_fee_rate(D(bad))


def test_a_fiat_amount_beyond_the_fiats_range_is_refused() -> None:
    """amount × price must be an amount of the fiat (below 10^18): a larger one cannot be stored
    exactly as a Decimal128 either, and the request would fail instead of being refused."""
    huge = terms(price="999999999999999999.12345677", max_amount="99999999999999999")
    with pytest.raises(Refused) as refused:
        trade_amounts(huge, "99999999999999998.12345677", D("0.001"))
    assert refused.value.code == "fiat_amount_too_large"
    with pytest.raises(Refused) as refused:
        trade_amounts(terms(price="1000000000000", max_amount="1000000"), "1000000", D("0.001"))
    assert refused.value.code == "fiat_amount_too_large"
    below = trade_amounts(terms(price="1000000000000", max_amount="1000000"), "999999", D("0"))
    assert below.fiat_amount == D("999999000000000000.00")
