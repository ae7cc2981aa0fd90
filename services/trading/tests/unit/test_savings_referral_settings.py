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


@pytest.mark.parametrize("raw", ['{"USDT": "5"}', '{"XYZ": "0.05"}', '["USDT"]', '{"USDT": "x"}'])
def test_bad_aprs_stop_the_service(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SAVINGS_APR", raw)
    with pytest.raises(ValidationError):
        SavingsSettings()


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
