"""Wallet settings, from the environment (CONTRACT.md, "Configuration")."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from shared.settings import ServiceSettings


class WalletSettings(ServiceSettings):
    http_port: int = Field(default=8001, validation_alias="WALLET_HTTP_PORT")
    mongodb_database: str = Field(default="exchange", validation_alias="WALLET_MONGODB_DATABASE")
    # "memory" keeps the ledger in the process: for benchmarks and demos, never for real money.
    store: Literal["mongo", "memory"] = Field(default="mongo", validation_alias="WALLET_STORE")
    batch_max_records: int = Field(
        default=500, ge=1, le=5000, validation_alias="WALLET_BATCH_MAX_RECORDS"
    )
    batch_timeout_ms: int = Field(default=50, ge=1, validation_alias="WALLET_BATCH_TIMEOUT_MS")
    consumer_session_timeout_ms: int = Field(
        default=10_000, validation_alias="WALLET_CONSUMER_SESSION_TIMEOUT_MS"
    )
    consumer_heartbeat_interval_ms: int = Field(
        default=3_000, validation_alias="WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS"
    )
    # How many recent messages per partition of market.prices a starting wallet reads back (the
    # trading service's setting of the same name).
    price_topic_lookback: int = Field(default=500, ge=1, validation_alias="PRICE_TOPIC_LOOKBACK")

    @model_validator(mode="after")
    def _memory_store_only_in_staging(self) -> Self:
        if self.store == "memory" and not self.is_staging:
            raise ValueError(
                "WALLET_STORE=memory keeps the ledger in the process and loses it on restart:"
                " refused with IS_STAGING=false (use WALLET_STORE=mongo)"
            )
        return self
