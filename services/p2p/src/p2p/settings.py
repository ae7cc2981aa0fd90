"""Configuration of the P2P service (environment variables)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, field_validator

from p2p.domain.offers import check_fee_rate
from shared.settings import ServiceSettings


class P2pSettings(ServiceSettings):
    """The secrets (AUTH_JWT_SECRET) come from the base, which refuses their development
    defaults when IS_STAGING=false."""

    p2p_http_port: int = 8003
    p2p_mongodb_database: str = "exchange"

    # The seller pays amount × rate, rounded up to the coin's scale, on top of the amount.
    p2p_fee_rate: Decimal = Decimal("0.001")
    # How long an action waits for the wallet before answering 202 with the trade as it is.
    p2p_action_wait_seconds: float = Field(5.0, ge=0)
    # The deadline sweeper runs this often, and takes a deadline as passed 5 s after it by its
    # clock (FUTURE_TOLERANCE, for a host's clock running fast): the contract allows 10 s.
    p2p_sweep_interval_seconds: float = Field(1.0, gt=0, le=4)
    p2p_outbox_relay_interval_seconds: float = Field(2.0, gt=0)
    # A trade waiting on the wallet this long gets its last command sent again (the wallet answers
    # with the first outcome): a result lost or dead-lettered on its way back cannot strand it.
    p2p_ask_again_after_seconds: float = Field(60.0, gt=0)
    p2p_results_consumer_group: str = "p2p"
    p2p_results_session_timeout_ms: int = 6000
    p2p_results_heartbeat_interval_ms: int = 1000

    @field_validator("p2p_fee_rate")
    @classmethod
    def _fee_rate(cls, value: Decimal) -> Decimal:
        return check_fee_rate(value)
