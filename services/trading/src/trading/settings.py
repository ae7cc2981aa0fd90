"""Configuration of the trading service (environment variables).

`TradingSettings` holds what every feature shares (Kafka, MongoDB, HTTP, the wallet.results
consumer). Each feature reads its own settings class from the environment in its package (e.g.
`trading.prices.settings.PriceSettings`), so adding a feature never edits this file.
"""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class TradingSettings(ServiceSettings):
    trading_http_port: int = 8004
    trading_mongodb_database: str = "trading"

    # How long a wallet command may take before a caller that waits for it gives up (it may
    # still be applied later, idempotently).
    wallet_result_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias="TRADING_WALLET_RESULT_TIMEOUT_SECONDS"
    )

    results_consumer_group: str = Field(
        "trading", validation_alias="TRADING_RESULTS_CONSUMER_GROUP"
    )
    results_session_timeout_ms: int = Field(
        6000, validation_alias="TRADING_RESULTS_SESSION_TIMEOUT_MS"
    )
    results_heartbeat_interval_ms: int = Field(
        1000, validation_alias="TRADING_RESULTS_HEARTBEAT_INTERVAL_MS"
    )
    # A price older than this is stale: never quoted, not listed (every feature reads the book).
    price_max_age_seconds: float = Field(60.0, gt=0)

    # Pending commands whose publication was never confirmed are re-sent after this long.
    outbox_relay_interval_seconds: float = Field(
        5.0, gt=0, validation_alias="TRADING_OUTBOX_RELAY_INTERVAL_SECONDS"
    )
