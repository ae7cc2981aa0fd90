"""The periods of the spot relay come from the environment, each its own, checked at start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trading.spot.settings import SpotSettings


def test_the_expiry_cancel_has_its_own_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """It reused the lock resend's period: waiting longer to resend a lock also left an expired
    order open longer when its matcher missed the cancel."""
    assert SpotSettings().spot_expiry_cancel_again_after_seconds == 30
    monkeypatch.setenv("SPOT_LOCK_RESEND_AFTER_SECONDS", "120")
    monkeypatch.setenv("SPOT_EXPIRY_CANCEL_AGAIN_AFTER_SECONDS", "5")
    settings = SpotSettings()
    assert (
        settings.spot_lock_resend_after_seconds,
        settings.spot_expiry_cancel_again_after_seconds,
    ) == (120, 5)


@pytest.mark.parametrize("raw", ["0", "-1", "soon"])
def test_a_period_that_is_not_positive_stops_the_service(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("SPOT_EXPIRY_CANCEL_AGAIN_AFTER_SECONDS", raw)
    with pytest.raises(ValidationError):
        SpotSettings()


def test_the_unconfirmed_batches_resend_has_its_own_period(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SpotSettings().spot_unconfirmed_resend_seconds == 30
    monkeypatch.setenv("SPOT_UNCONFIRMED_RESEND_SECONDS", "2.5")
    assert SpotSettings().spot_unconfirmed_resend_seconds == 2.5
    monkeypatch.setenv("SPOT_UNCONFIRMED_RESEND_SECONDS", "0")
    with pytest.raises(ValidationError):
        SpotSettings()
