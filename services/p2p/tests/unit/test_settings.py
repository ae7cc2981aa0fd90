"""P2P settings: the contract's defaults, and no development secret in production."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from p2p.settings import P2pSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("P2P_HTTP_PORT", "P2P_FEE_RATE", "IS_STAGING"):
        monkeypatch.delenv(name, raising=False)
    settings = P2pSettings()
    assert settings.p2p_http_port == 8003
    assert settings.p2p_fee_rate == Decimal("0.001")
    assert settings.p2p_sweep_interval_seconds <= 4  # 5 s of clock skew + 4: within 10 s


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_HTTP_PORT", "9003")
    monkeypatch.setenv("P2P_FEE_RATE", "0.0025")
    settings = P2pSettings()
    assert (settings.p2p_http_port, settings.p2p_fee_rate) == (9003, Decimal("0.0025"))


@pytest.mark.parametrize("rate", ["1", "-0.1", "abc"])
def test_bad_fee_rate_is_refused(monkeypatch: pytest.MonkeyPatch, rate: str) -> None:
    monkeypatch.setenv("P2P_FEE_RATE", rate)
    with pytest.raises(ValidationError):
        P2pSettings()


def test_production_refuses_development_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTH_JWT_SECRET", raising=False)
    monkeypatch.setenv("IS_STAGING", "false")
    with pytest.raises(ValidationError, match="AUTH_JWT_SECRET"):
        P2pSettings()
    monkeypatch.setenv("AUTH_JWT_SECRET", "a-real-secret-of-enough-length-for-hs256")
    assert not P2pSettings().is_staging


def test_a_sweep_interval_that_would_pass_the_contracts_10_s_is_refused() -> None:
    # The sweeper takes a deadline as passed 5 s after it (FUTURE_TOLERANCE): 4 s at most more.
    assert P2pSettings(p2p_sweep_interval_seconds=4).p2p_sweep_interval_seconds == 4
    with pytest.raises(ValidationError):
        P2pSettings(p2p_sweep_interval_seconds=4.5)
