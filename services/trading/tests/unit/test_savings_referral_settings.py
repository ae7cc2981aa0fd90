"""Savings APRs, the commission rate and the ask-again period come from the environment, checked
at start."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from trading.referrals.settings import ReferralSettings
from trading.savings.settings import SavingsSettings


def test_aprs_are_a_json_map_of_currency_to_decimal_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAVINGS_APR", '{"usdt": "0.05", "BTC": "0.015"}')
    assert SavingsSettings().savings_apr == {"USDT": Decimal("0.05"), "BTC": Decimal("0.015")}


def test_default_products() -> None:
    assert SavingsSettings().savings_apr["USDT"] == Decimal("0.05")


@pytest.mark.parametrize(
    "raw",
    [
        '{"USDT": "5"}',
        '{"XYZ": "0.05"}',
        '["USDT"]',
        '{"USDT": "x"}',
        '{"USDT": "-0.01"}',
        '{"USDT": "NaN"}',
        '{"USDT": "Infinity"}',
        '{"USDT": "-Infinity"}',
    ],
)
def test_bad_aprs_stop_the_service(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SAVINGS_APR", raw)
    with pytest.raises(ValidationError):
        SavingsSettings()


@pytest.mark.parametrize(
    "apr", ["0.05000000000000000000000000000000000001", "0.0000000000000000001", "1E-19"]
)
def test_an_apr_with_more_than_18_decimals_stops_the_service(
    monkeypatch: pytest.MonkeyPatch, apr: str
) -> None:
    # Every interest record stores its APR exactly (decimal128), so at most 18 decimals, as for the
    # commission rate: an APR of 38 decimals was accepted at start, then every accrual of its
    # currency failed to store its records and the scheduler retried that day forever.
    monkeypatch.setenv("SAVINGS_APR", f'{{"USDT": "{apr}"}}')
    with pytest.raises(ValidationError, match="APR of USDT has more than 18 decimal places"):
        SavingsSettings()


def test_an_apr_of_18_decimals_or_with_trailing_zeros_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "SAVINGS_APR", '{"USDT": "0.123456789012345678", "BTC": "0.0100000000000000000000"}'
    )
    assert SavingsSettings().savings_apr == {
        "USDT": Decimal("0.123456789012345678"),
        "BTC": Decimal("0.01"),
    }


def test_commission_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ReferralSettings().referral_commission_rate == Decimal("0.20")
    monkeypatch.setenv("REFERRAL_COMMISSION_RATE", "0.25")
    assert ReferralSettings().referral_commission_rate == Decimal("0.25")
    monkeypatch.setenv("REFERRAL_COMMISSION_RATE", "1.5")
    with pytest.raises(ValidationError):
        ReferralSettings()
    # Every commission record stores its rate: one longer than a stored decimal holds would have
    # failed every claim, so every fee event, instead of stopping the service at its start.
    monkeypatch.setenv("REFERRAL_COMMISSION_RATE", "0." + "1" * 40)
    with pytest.raises(ValidationError):
        ReferralSettings()
    monkeypatch.setenv("REFERRAL_COMMISSION_RATE", "0." + "1" * 18)
    assert ReferralSettings().referral_commission_rate == Decimal("0." + "1" * 18)


def test_referral_ask_again_period(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ReferralSettings().referral_ask_again_after_seconds == 60
    monkeypatch.setenv("REFERRAL_ASK_AGAIN_AFTER_SECONDS", "15")
    assert ReferralSettings().referral_ask_again_after_seconds == 15
    monkeypatch.setenv("REFERRAL_ASK_AGAIN_AFTER_SECONDS", "0")
    with pytest.raises(ValidationError):
        ReferralSettings()
