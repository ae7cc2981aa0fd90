"""The documents the spot stores keep: one per order (`spot_orders`), one per batch of the
matcher's decisions (`spot_batches`) and one per market (`spot_markets`, its projection state and
book snapshot). Both stores keep exactly these, so both hand back the same values: amounts as
plain decimal strings without trailing zeros, prices with their tick's decimals, integers that
BSON's int64 cannot hold as strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from bson import Decimal128

from shared.money import format_amount
from trading.spot.domain.book import OrderChange, OrderType, Side, Status
from trading.spot.domain.markets import Market
from trading.spot.orders import (
    OrderFill,
    SpotBatch,
    SpotOrder,
    change_document,
    change_from,
    fill_document,
    fill_for,
    fill_from,
)

Document = dict[str, Any]
# The statuses of an order in its market's book.
RESTING: Final = (Status.OPEN.value, Status.PARTIALLY_FILLED.value)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format_amount(value)


def order_document(order: SpotOrder) -> Document:
    return {
        "_id": order.order_id,
        "user_id": order.user_id,
        "pair": order.pair,
        "side": order.side.value,
        "type": order.type.value,
        "price": None if order.price is None else format(order.price, "f"),  # tick's decimals
        # `price` as a number: text sorts "9.00" after "10.00" (the resting sells, cheapest first)
        "price_number": None if order.price is None else Decimal128(order.price),
        "amount": _text(order.amount),
        "quote_amount": _text(order.quote_amount),
        "lock_currency": order.lock_currency,
        "lock_amount": format_amount(order.lock_amount),
        "status": order.status.value,
        "reason": order.reason,
        "filled_amount": format_amount(order.filled_amount),
        "remaining": None if order.remaining is None else str(order.remaining),
        "hold": str(order.hold),
        "book_sequence": order.book_sequence,
        "fills": [f.as_json() for f in order.fills],
        "cancel_requested": order.cancel_requested,
        "client_order_id": order.client_order_id,
        "expires_at": order.expires_at,
        "version": 0,  # the last batch projected onto it
        "created_at": order.created_at,
        "updated_at": order.updated_at or order.created_at,
    }


def order_from(doc: Document) -> SpotOrder:
    return SpotOrder(
        order_id=doc["_id"],
        user_id=doc["user_id"],
        pair=doc["pair"],
        side=Side(doc["side"]),
        type=OrderType(doc["type"]),
        price=_decimal(doc["price"]),
        amount=_decimal(doc["amount"]),
        quote_amount=_decimal(doc["quote_amount"]),
        lock_currency=doc["lock_currency"],
        lock_amount=Decimal(doc["lock_amount"]),
        created_at=doc["created_at"],
        status=Status(doc["status"]),
        reason=doc["reason"],
        filled_amount=Decimal(doc["filled_amount"]),
        remaining=None if doc["remaining"] is None else int(doc["remaining"]),
        hold=int(doc["hold"]),
        book_sequence=doc["book_sequence"],
        fills=[
            OrderFill(
                f["trade_id"],
                Decimal(f["price"]),
                Decimal(f["amount"]),
                Decimal(f["fee"]),
                f["fee_currency"],
                f["liquidity"],
            )
            for f in doc["fills"]
        ],
        cancel_requested=doc["cancel_requested"],
        updated_at=doc["updated_at"],
        client_order_id=doc.get("client_order_id"),
        expires_at=doc.get("expires_at"),
    )


def batch_document(batch: SpotBatch, at: datetime) -> Document:
    return {
        "_id": batch.batch_id,
        "pair": batch.pair,
        "first": batch.first,
        "last": batch.last,
        "fills": [fill_document(f) for f in batch.fills],
        "changes": [change_document(c) for c in batch.changes],
        "bids": [[str(p), str(s)] for p, s in batch.bids],
        "asks": [[str(p), str(s)] for p, s in batch.asks],
        "dispatched": False,
        "created_at": at,
    }


def batch_from(doc: Document) -> SpotBatch:
    return SpotBatch(
        doc["pair"],
        doc["first"],
        doc["last"],
        [fill_from(f) for f in doc["fills"]],
        [change_from(c) for c in doc["changes"]],
        [(int(p), int(s)) for p, s in doc["bids"]],
        [(int(p), int(s)) for p, s in doc["asks"]],
    )


def last_changes(batch: SpotBatch) -> dict[str, OrderChange]:
    """Each order's state after the batch: its last change in it."""
    return {c.order_id: c for c in batch.changes}


def fills_by_order(batch: SpotBatch, market: Market) -> dict[str, list[dict[str, str]]]:
    """The batch's fills as each of their two orders sees them, in decision order."""
    fills: dict[str, list[dict[str, str]]] = {}
    for fill in batch.fills:
        for order_id in (fill.buy_order_id, fill.sell_order_id):
            fills.setdefault(order_id, []).append(fill_for(order_id, fill, market).as_json())
    return fills


def projected_fields(
    change: OrderChange, batch: SpotBatch, market: Market, at: datetime
) -> Document:
    """What projecting `batch` sets on the order of `change` (its fills are appended besides)."""
    return {
        "status": change.status.value,
        "reason": change.reason,
        "filled_amount": format_amount(market.amount(change.filled)),
        "remaining": None if change.remaining is None else str(change.remaining),
        "hold": str(change.hold),
        "book_sequence": change.sequence,
        "version": batch.last,
        "updated_at": at,
    }


def market_snapshot(batch: SpotBatch, market: Market, at: datetime) -> Document:
    """The market's projection state after `batch`: its sequence and the book's depth."""
    return {
        "sequence": batch.last,
        "bids": [[market.price_text(p), format_amount(market.amount(s))] for p, s in batch.bids],
        "asks": [[market.price_text(p), format_amount(market.amount(s))] for p, s in batch.asks],
        "updated_at": at,
    }
