"""The cursor of a user's own orders: newest first by `created_at`, then by `order_id`, both
descending (`shared.paging` says what a cursor is). An order that leaves the list while a client
pages (an open order that closes) is not shown on a later page of it."""

from __future__ import annotations

from typing import Final

from shared.paging import Position, cursor_position, position_cursor
from trading.errors import Invalid, TradingError
from trading.spot.orders import SpotOrder

# What a client that does not page got before the list paged: its newest 500 orders.
DEFAULT_PAGE_SIZE: Final = 500
MAX_PAGE_SIZE: Final = 500

# Which list a cursor was made for: the spot orders' (another list's cursor is not one).
_ORDERS: Final = "s"


class InvalidCursor(TradingError):
    """A cursor the order list did not return."""

    http_status = 400

    def __init__(self) -> None:
        super().__init__("invalid_cursor", "cursor is not one this API returned")


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Invalid("invalid_limit", f"limit is 1 to {MAX_PAGE_SIZE}")


def order_cursor(order: SpotOrder) -> str:
    """Where the list goes on after `order`."""
    return position_cursor(_ORDERS, (order.created_at, order.order_id))


def order_position(cursor: str) -> Position:
    """The `(created_at, order_id)` an `order_cursor` names; 400 `invalid_cursor` for anything
    else."""
    try:
        return cursor_position(cursor, _ORDERS)
    except ValueError:
        raise InvalidCursor() from None
