"""A staging pin is published as given, so it holds to what prices keep: at most 8 significant
digits at every size (from 1,000,000 up too, where the feed's rounding keeps 2 decimals)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading.prices.domain import pin_refusal


@pytest.mark.parametrize(
    "price",
    [
        "123456789",  # 9 digits, no decimals
        "1234567.89",  # 9 digits: 2 decimals from 1,000,000 up are still digits
        "1000000.01",
        "12345678.9",
        "999999999.99",  # 11 digits, just below the limit
        "50000.123456789",
        "0.00000123456789",
        "1.0000000000000000000000000000000001",  # 35 digits, beyond a default context's 28
    ],
)
def test_a_pin_of_more_than_8_significant_digits_is_refused(price: str) -> None:
    refusal = pin_refusal(Decimal(price))
    assert refusal is not None, price
    assert refusal[0] == "price_too_precise"


@pytest.mark.parametrize(
    "price",
    [
        "12345678",
        "1234567.8",
        "12345678.00",  # trailing zeros are not significant
        "999999990",
        "1000000.00",
        "50000.12",
        "50000.00",
        "0.12345678",
        "0.000001",
        "0.0000012345678",
    ],
)
def test_a_pin_of_up_to_8_significant_digits_is_kept(price: str) -> None:
    assert pin_refusal(Decimal(price)) is None, price
