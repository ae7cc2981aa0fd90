"""Settings of spot trading (environment variables; the contract's defaults)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trading.spot.domain.markets import FeeRate, Fees


class SpotSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    spot_maker_fee_rate: Decimal = Field(Decimal("0.001"), ge=0, lt=1)
    spot_taker_fee_rate: Decimal = Field(Decimal("0.002"), ge=0, lt=1)
    # A market buy given in base locks what taking that amount from the book costs now, plus
    # this share for the book moving before it matches (the unspent part is unlocked).
    spot_market_buy_margin: Decimal = Field(Decimal("0.05"), ge=0, le=1)
    spot_matcher_group: str = "trading-spot-matcher"
    spot_matcher_session_timeout_ms: int = 6000
    spot_matcher_heartbeat_interval_ms: int = 1000
    spot_matcher_batch_size: int = Field(500, ge=1)
    spot_book_levels: int = Field(50, ge=1)
    # A limit order is refused (409 too_many_open_orders) while the user has this many orders
    # pending, open or partially filled: each rests in the matcher's memory and every snapshot.
    spot_max_open_orders_per_user: int = Field(1000, ge=1)
    # A cancel answers 200 with the cancelled order when it shows cancelled within this time (the
    # matcher decided it and the wallet unlocked), else 202 with the order as it is (the cancel is
    # on its way). As long as p2p's actions wait for the wallet.
    spot_cancel_wait_seconds: float = Field(5.0, ge=0)
    # The matcher shows a batch's fills and cancels on the orders once the wallet answered its
    # commands (settle_trade, unlock), so that a `filled` or `cancelled` order's money has moved;
    # a wallet slower than this is not waited for longer (the commands still apply, once).
    spot_settle_wait_seconds: float = Field(5.0, gt=0)
    # A batch shown before the wallet answered each of its commands for good (slower than the
    # wait above, a result lost, a failure it recorded no outcome for) is sent again this often,
    # until it is.
    spot_unconfirmed_resend_seconds: float = Field(30.0, gt=0)
    # An order still pending this long gets its lock sent again (a send lost in a crash); well
    # above the wallet's usual answer time, so a busy wallet is not sent every lock twice.
    spot_lock_resend_after_seconds: float = Field(30.0, gt=0)
    # An expired order still open this long after its cancel was sent gets the cancel sent again
    # (its matcher was down or the message lost); the matcher answers each once.
    spot_expiry_cancel_again_after_seconds: float = Field(30.0, gt=0)

    def fees(self) -> Fees:
        return Fees(FeeRate(self.spot_maker_fee_rate), FeeRate(self.spot_taker_fee_rate))
