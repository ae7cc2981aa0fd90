"""A user's own orders a page at a time, as the wallet's history, the gateway's withdrawals and the
P2P lists are read: at most `limit` orders, and an opaque cursor that names where the next page
starts (None on the last page).

A cursor is the position of the last order of its page in the list's order: newest first by
`created_at`, then by `order_id`, both descending. That order is total (the id breaks every tie)
and made of values an order never changes, so an order that was in the list when paging began is
on exactly one page, whatever is placed meanwhile (one that leaves the list meanwhile, an open
order that closes, is not shown on a later page of it). What the position holds is the service's
business; a client only hands it back.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from shared.paging import Position
from trading.errors import Invalid, TradingError
from trading.spot.orders import SpotOrder

# What a client that does not page got before the list paged: its newest 500 orders.
DEFAULT_PAGE_SIZE: Final = 500
MAX_PAGE_SIZE: Final = 500
MAX_CURSOR_LENGTH: Final = 200

# Which list a cursor was made for: the spot orders' (another service's cursor is not one).
_ORDERS: Final = "s"
# An instant as whole milliseconds since the epoch (what both stores keep of it).
_MILLIS: Final = re.compile(r"-?[0-9]{1,15}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)


class InvalidCursor(TradingError):
    """A cursor the order list did not return."""

    http_status = 400

    def __init__(self) -> None:
        super().__init__("invalid_cursor", "cursor is not one this API returned")


@dataclass(frozen=True, slots=True)
class Page[T]:
    items: Sequence[T]
    next_cursor: str | None


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Invalid("invalid_limit", f"limit is 1 to {MAX_PAGE_SIZE}")


def page_of(found: Sequence[SpotOrder], limit: int) -> Page[SpotOrder]:
    """The page of `found`, read with `limit + 1`: the extra order only tells that more follow."""
    items = found[:limit]
    return Page(items, order_cursor(items[-1]) if len(found) > limit else None)


def order_cursor(order: SpotOrder) -> str:
    """Where the list goes on after `order`."""
    # Integer arithmetic: a float of seconds times 1000 loses the last millisecond for some instants.
    millis = (order.created_at - _EPOCH) // _MILLISECOND
    return _encode(f"{_ORDERS}|{millis}|{order.order_id}")


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def order_position(cursor: str) -> Position:
    """The `(created_at, order_id)` an `order_cursor` names; 400 `invalid_cursor` for anything
    else."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor() from None
    if _encode(text) != cursor:
        raise InvalidCursor()  # not as this API writes one (another alphabet, stray bits)
    tag, _, rest = text.partition("|")
    millis, _, order_id = rest.partition("|")
    if tag != _ORDERS or not _MILLIS.fullmatch(millis) or not order_id:
        raise InvalidCursor()
    try:
        # In UTC, as stored; an instant before year 1 or after 9999 is no order's.
        return _EPOCH + int(millis) * _MILLISECOND, order_id
    except OverflowError:
        raise InvalidCursor() from None
