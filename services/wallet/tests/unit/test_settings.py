"""Wallet settings: production refuses what only a demo may use."""

import pytest
from pydantic import ValidationError

from wallet.settings import WalletSettings

SECRET = "a-real-production-secret-of-some-length"


def test_the_memory_store_refuses_to_start_outside_staging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IS_STAGING", "false")
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    monkeypatch.setenv("WALLET_STORE", "memory")
    with pytest.raises(ValidationError, match=r"WALLET_STORE=memory .* IS_STAGING=false"):
        WalletSettings()
    monkeypatch.setenv("WALLET_STORE", "mongo")
    assert WalletSettings().store == "mongo"


def test_the_memory_store_is_allowed_in_staging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IS_STAGING", "true")
    monkeypatch.setenv("WALLET_STORE", "memory")
    assert WalletSettings().store == "memory"
