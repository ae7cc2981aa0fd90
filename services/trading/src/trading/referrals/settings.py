"""Settings of referrals (environment variables)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReferralSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # The referrer's share of every fee a bound invitee pays (REFERRAL_COMMISSION_RATE=0.20).
    # At most 18 decimals: each commission record stores its rate exactly (decimal128).
    referral_commission_rate: Decimal = Field(Decimal("0.20"), ge=0, le=1, decimal_places=18)
    referral_events_consumer_group: str = "trading-referrals"
    # A commission still pending this long after its command was last sent gets it sent again
    # (the wallet answers with the first outcome): a lost result cannot leave it pending.
    referral_ask_again_after_seconds: float = Field(60.0, gt=0)
