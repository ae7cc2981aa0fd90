"""A spot order as the service keeps and shows it, and the matcher's batch of decisions.

The matcher's decisions are stored as one insert-only document per batch (`SpotBatch`); orders
and the market's snapshot are projections of them, each written by single-document updates that
carry the batch's sequence as a guard, so projecting a batch twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.money import format_amount
from trading.spot.domain.book import CLOSED_STATUSES, Fill, OrderChange, OrderType, Side, Status
from trading.spot.domain.markets import Market

OPEN_STATUSES = frozenset({Status.PENDING, Status.OPEN, Status.PARTIALLY_FILLED})
# the wallet's transaction types (CONTRACT.md, "Ledger accounts and transaction types")
SPOT_ORDER = "spot_order"
SPOT_TRADE = "spot_trade"


def lock_reference(order_id: str) -> str:
    return f"{order_id}:lock"


def unlock_reference(order_id: str, status: str) -> str:
    # An order releases money at most twice: once when it rests after taking at better prices
    # (partially_filled), once when it closes; the status names the step.
    return f"{order_id}:unlock:{status}"


@dataclass(frozen=True)
class OrderFill:
    trade_id: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: str  # maker | taker

    def as_json(self) -> dict[str, str]:
        return {
            "trade_id": self.trade_id,
            "price": format(self.price, "f"),  # with the tick's decimals, as the market's prices
            "amount": format_amount(self.amount),
            "fee": format_amount(self.fee),
            "fee_currency": self.fee_currency,
            "liquidity": self.liquidity,
        }


@dataclass
class SpotOrder:
    order_id: str
    user_id: str
    pair: str
    side: Side
    type: OrderType
    price: Decimal | None
    amount: Decimal | None
    quote_amount: Decimal | None
    lock_currency: str
    lock_amount: Decimal
    created_at: datetime
    status: Status = Status.PENDING
    reason: str | None = None
    filled_amount: Decimal = Decimal(0)
    remaining: int | None = None  # steps left (None: a market buy given in quote)
    hold: int = 0  # units of lock_currency still locked for it
    book_sequence: int | None = None
    fills: list[OrderFill] = field(default_factory=list)
    cancel_requested: bool = False
    updated_at: datetime | None = None
    client_order_id: str | None = None
    expires_at: datetime | None = None  # cancelled (reason expired) when still open then

    def same_request(self, other: SpotOrder) -> bool:
        """Whether two placements asked for the same order (a retry, not a new order): the same
        figures and the same lifetime (`expires_in_seconds`, so a retry placed later still is)."""
        fields = ("user_id", "pair", "side", "type", "price", "amount", "quote_amount")
        same = all(getattr(self, f) == getattr(other, f) for f in fields)
        return same and self.lifetime == other.lifetime

    @property
    def lifetime(self) -> timedelta | None:
        """How long the order was asked to rest (None: until cancelled)."""
        return None if self.expires_at is None else self.expires_at - self.created_at

    @property
    def closed(self) -> bool:
        return self.status in CLOSED_STATUSES


def fill_for(order_id: str, fill: Fill, market: Market) -> OrderFill:
    """The fill as the given side sees it: the fee is taken from what that side receives."""
    buyer = fill.buy_order_id == order_id
    taker = fill.taker_side is (Side.BUY if buyer else Side.SELL)
    return OrderFill(
        trade_id=fill.trade_id,
        price=market.price(fill.price),
        amount=market.amount(fill.steps),
        fee=market.base_amount(fill.buyer_fee) if buyer else market.quote_amount(fill.seller_fee),
        fee_currency=market.base.code if buyer else market.quote.code,
        liquidity="taker" if taker else "maker",
    )


def fill_document(fill: Fill) -> dict[str, Any]:
    # integers as strings: 10^18 units of ETH overflow BSON's int64
    return {
        "trade_id": fill.trade_id,
        "sequence": fill.sequence,
        "price": str(fill.price),
        "steps": str(fill.steps),
        "base_units": str(fill.base_units),
        "quote_units": str(fill.quote_units),
        "buy_order_id": fill.buy_order_id,
        "sell_order_id": fill.sell_order_id,
        "buyer_id": fill.buyer_id,
        "seller_id": fill.seller_id,
        "taker_side": fill.taker_side.value,
        "buyer_fee": str(fill.buyer_fee),
        "seller_fee": str(fill.seller_fee),
    }


def fill_from(doc: dict[str, Any]) -> Fill:
    return Fill(
        doc["trade_id"],
        doc["sequence"],
        int(doc["price"]),
        int(doc["steps"]),
        int(doc["base_units"]),
        int(doc["quote_units"]),
        doc["buy_order_id"],
        doc["sell_order_id"],
        doc["buyer_id"],
        doc["seller_id"],
        Side(doc["taker_side"]),
        int(doc["buyer_fee"]),
        int(doc["seller_fee"]),
    )


def change_document(change: OrderChange) -> dict[str, Any]:
    return {
        "order_id": change.order_id,
        "user_id": change.user_id,
        "side": change.side.value,
        "status": change.status.value,
        "reason": change.reason,
        "filled": str(change.filled),
        "remaining": None if change.remaining is None else str(change.remaining),
        "hold": str(change.hold),
        "released": str(change.released),
        "sequence": change.sequence,
    }


def change_from(doc: dict[str, Any]) -> OrderChange:
    return OrderChange(
        doc["order_id"],
        doc["user_id"],
        Side(doc["side"]),
        Status(doc["status"]),
        doc["reason"],
        int(doc["filled"]),
        None if doc["remaining"] is None else int(doc["remaining"]),
        int(doc["hold"]),
        int(doc["released"]),
        doc["sequence"],
    )


@dataclass(frozen=True)
class SpotBatch:
    """One batch of the matcher's decisions for one market, in decision order."""

    pair: str
    first: int  # sequence numbers: batches of a market never overlap
    last: int
    fills: list[Fill]
    changes: list[OrderChange]
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]

    @property
    def batch_id(self) -> str:
        return f"{self.pair}:{self.first:014d}"
