"""Settings of the price feed (environment variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PriceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Unset: the built-in deterministic walk. "coingecko" / "binance": poll that API instead.
    price_source: Literal["builtin", "coingecko", "binance"] | None = None
    # Off in extra instances: one publisher of the feed is enough (they all read the topic).
    price_feed_enabled: bool = True
    price_feed_interval_seconds: float = Field(2.0, gt=0)
    price_feed_seed: int = 20261130
    coingecko_api_url: str = "https://api.coingecko.com"
    binance_api_url: str = "https://api.binance.com"
    price_source_timeout_seconds: float = Field(5.0, gt=0)
    # How many recent messages per partition of market.prices a starting process reads back.
    price_topic_lookback: int = Field(500, ge=1)
