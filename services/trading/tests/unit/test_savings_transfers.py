"""Savings transfer requests and the status a wallet result gives them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading.savings.domain.errors import SavingsRefused
from trading.savings.domain.products import SavingsProduct, parse_aprs, products_from
from trading.savings.domain.transfers import (
    TransferStatus,
    reference_id,
    same_transfer,
    status_after,
    transaction_type_of,
    transfer_id_of,
    validate_transfer,
)

APRS = {"USDT": Decimal("0.05")}


def test_a_valid_request_is_normalised() -> None:
    currency, amount, direction = validate_transfer("usdt", "100.5", "to_savings", APRS)
    assert (currency.code, amount, direction) == ("USDT", Decimal("100.5"), "to_savings")
    assert transaction_type_of(direction) == "savings_deposit"
    assert transaction_type_of("to_wallet") == "savings_withdrawal"


@pytest.mark.parametrize(
    ("currency", "amount", "direction", "code"),
    [
        ("USDT", "100", "sideways", "invalid_direction"),
        ("USDT", "100", None, "invalid_direction"),
        ("XYZ", "100", "to_savings", "unknown_currency"),
        ("USDT", 100, "to_savings", "amount_not_a_string"),
        ("USDT", "0", "to_savings", "amount_not_positive"),
        ("USDT", "-1", "to_savings", "amount_not_positive"),
        ("USDT", "0.0000001", "to_savings", "amount_too_precise"),
        ("USDT", "NaN", "to_savings", "amount_not_a_number"),
        ("BTC", "1", "to_savings", "no_savings_product"),
    ],
)
def test_bad_requests_are_refused_with_a_code(
    currency: object, amount: object, direction: object, code: str
) -> None:
    with pytest.raises(SavingsRefused) as refused:
        validate_transfer(currency, amount, direction, APRS)
    assert refused.value.code == code
    assert refused.value.http_status == 400


def test_savings_can_leave_a_currency_without_a_product() -> None:
    # Savings migrated from the legacy system must not be trapped.
    currency, _, _ = validate_transfer("BTC", "0.1", "to_wallet", APRS)
    assert currency.code == "BTC"


def test_references_round_trip() -> None:
    assert reference_id("abc") == "savings:abc"
    assert transfer_id_of("savings:abc") == "abc"
    assert transfer_id_of("interest:USDT:2026-11-29:u") is None


def test_a_stored_transfer_is_the_same_request_only_with_the_same_figures() -> None:
    stored = {
        "user_id": "amy",
        "currency": "USDT",
        "amount": Decimal("100"),
        "direction": "to_savings",
    }
    assert same_transfer(stored, "amy", "USDT", Decimal("100.00"), "to_savings")
    assert not same_transfer(stored, "amy", "USDT", Decimal("101"), "to_savings")
    assert not same_transfer(stored, "amy", "USDT", Decimal("100"), "to_wallet")
    assert not same_transfer(stored, "amy", "BTC", Decimal("100"), "to_savings")
    assert not same_transfer(stored, "bob", "USDT", Decimal("100"), "to_savings")


def test_status_follows_the_wallet_outcome() -> None:
    assert status_after("applied", None) is TransferStatus.COMPLETED
    assert status_after("rejected", None) is TransferStatus.FAILED
    assert status_after("duplicate", "applied") is TransferStatus.COMPLETED
    assert status_after("duplicate", "rejected") is TransferStatus.FAILED
    assert status_after("duplicate", None) is None


def test_aprs_are_checked_and_listed_by_currency() -> None:
    aprs = parse_aprs({"usdt": "0.05", "BTC": Decimal("0.01")})
    assert products_from(aprs) == [
        SavingsProduct("BTC", Decimal("0.01")),
        SavingsProduct("USDT", Decimal("0.05")),
    ]
    assert products_from(aprs)[1].as_json() == {"currency": "USDT", "apr": "0.05"}
    for bad in ({"USDT": "1.5"}, {"USDT": "-0.01"}, {"USDT": "abc"}, {"XYZ": "0.05"}):
        with pytest.raises(ValueError, match=r"."):
            parse_aprs(bad)


def test_an_apr_a_stored_decimal_cannot_hold_exactly_is_refused() -> None:
    # 38 decimals: every interest record of the currency would have failed to store its APR.
    with pytest.raises(ValueError, match="APR of USDT has more than 18 decimal places"):
        parse_aprs({"USDT": "0.05000000000000000000000000000000000001"})
    for bad in ("NaN", "Infinity", "-Infinity", "-0.000001"):
        with pytest.raises(ValueError, match="APR of USDT"):
            parse_aprs({"USDT": bad})
    assert parse_aprs({"USDT": Decimal("0.123456789012345678")}) == {
        "USDT": Decimal("0.123456789012345678")
    }
