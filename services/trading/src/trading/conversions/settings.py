"""Settings of swaps and express buy (environment variables; the contract's defaults)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trading.conversions.domain import ConversionKind, Terms


class ConversionSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    swap_fee_rate: Decimal = Field(Decimal("0.001"), ge=0, lt=1)
    swap_spread: Decimal = Field(Decimal("0.005"), ge=0, lt=1)
    swap_quote_ttl_seconds: float = Field(10.0, gt=0)
    express_buy_fee_rate: Decimal = Field(Decimal("0.015"), ge=0, lt=1)
    express_buy_spread: Decimal = Field(Decimal("0.01"), ge=0, lt=1)
    express_buy_quote_ttl_seconds: float = Field(30.0, gt=0)
    # A swap or express buy still pending this long after its command was last sent gets it sent
    # again (the wallet answers with the first outcome): a lost result cannot leave it pending.
    conversion_ask_again_after_seconds: float = Field(30.0, gt=0)

    def terms(self) -> dict[ConversionKind, Terms]:
        return {
            ConversionKind.SWAP: Terms(
                self.swap_fee_rate, self.swap_spread, timedelta(seconds=self.swap_quote_ttl_seconds)
            ),
            ConversionKind.EXPRESS_BUY: Terms(
                self.express_buy_fee_rate,
                self.express_buy_spread,
                timedelta(seconds=self.express_buy_quote_ttl_seconds),
            ),
        }
