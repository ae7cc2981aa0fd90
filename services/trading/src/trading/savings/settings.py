"""Settings of savings (environment variables)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trading.savings.domain.products import parse_aprs

DEFAULT_APRS: Final = {"USDT": "0.05", "USDC": "0.05", "BTC": "0.01", "ETH": "0.02"}


def _aprs(raw: object) -> dict[str, Decimal]:
    if not isinstance(raw, dict):
        raise ValueError('expected a JSON object of currency → APR, e.g. {"USDT": "0.05"}')
    return parse_aprs(raw)


class SavingsSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # SAVINGS_APR='{"USDT": "0.05", "BTC": "0.01"}': one product per currency listed.
    savings_apr: Annotated[dict[str, Decimal], BeforeValidator(_aprs)] = Field(
        default_factory=lambda: parse_aprs(DEFAULT_APRS)
    )
    # Off in extra instances if wanted; two schedulers pay nothing twice (one key per payment).
    savings_scheduler_enabled: bool = True
    # The run for a day starts this long after 00:00 UTC, so events committed just before
    # midnight have reached the history.
    savings_accrual_delay_seconds: float = Field(5.0, ge=0)
    # A (re)started service makes sure the last N ended days are accrued.
    savings_accrual_lookback_days: int = Field(7, ge=0, le=366)
    savings_history_consumer_group: str = "trading-savings-history"
    # How long an accrual waits for the history to read what the ledger has published.
    savings_history_catch_up_seconds: float = Field(30.0, gt=0)
    # A transfer still pending after this long has its command published again (idempotent).
    savings_transfer_resend_after_seconds: float = Field(30.0, gt=0)
