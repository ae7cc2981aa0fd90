"""Pages of the lists a client reads (the active offers, a user's own trades), as the wallet's
history and the gateway's withdrawals are read: at most `limit` items, and an opaque cursor that
names where the next page starts (None on the last page).

A cursor is the position of the last item of its page in the list's order, which is total (the
id breaks every tie) and made of values an item never changes: an item that was there when
paging began is on exactly one page, whatever is added meanwhile. What the position holds is the
service's business; a client only hands it back.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from p2p.application.ports import Offer, OfferPosition, Trade
from p2p.domain.errors import Refused
from shared.paging import Position

DEFAULT_PAGE_SIZE: Final = 200
MAX_PAGE_SIZE: Final = 200
MAX_CURSOR_LENGTH: Final = 200

# Which list a cursor was made for: one list's cursor is not another's.
_OFFERS: Final = "o"
_TRADES: Final = "t"
# A stored price as plain text; a stored decimal holds at most 34 significant digits.
_PRICE: Final = re.compile(r"[0-9]{1,40}(\.[0-9]{1,40})?")
_MAX_PRICE_DIGITS: Final = 34


@dataclass(frozen=True, slots=True)
class Page[T]:
    items: Sequence[T]
    next_cursor: str | None


def invalid_cursor() -> Refused:
    return Refused("invalid_cursor", "cursor is not one this API returned")


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Refused("invalid_limit", f"limit is 1 to {MAX_PAGE_SIZE}")


def page_of[T](found: Sequence[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """The page of `found`, read with `limit + 1`: the extra item only tells that more follow."""
    items = found[:limit]
    return Page(items, cursor_of(items[-1]) if len(found) > limit else None)


def _encode(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode().rstrip("=")


def _decode(cursor: str, kind: str, count: int) -> list[str]:
    """The `count` parts of a cursor `_encode` made for `kind`; the last may hold a "|"."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid_cursor()
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_cursor() from None
    tag, _, rest = text.partition("|")
    parts = rest.split("|", count - 1)
    if tag != kind or len(parts) != count or not all(parts):
        raise invalid_cursor()
    return parts


def _instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
        if instant.tzinfo is None:
            raise invalid_cursor()
        # In UTC, as stored: an offset taking it past year 1 or 9999 would fail only when
        # compared or encoded for MongoDB.
        return instant.astimezone(UTC)
    except (ValueError, OverflowError):
        raise invalid_cursor() from None


def _price(text: str) -> Decimal:
    if not _PRICE.fullmatch(text):
        raise invalid_cursor()
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise invalid_cursor() from None
    if len(price.as_tuple().digits) > _MAX_PRICE_DIGITS:
        raise invalid_cursor()
    return price


def offer_cursor(offer: Offer) -> str:
    """Where the active offers go on after `offer` (cheapest first, then oldest, then by id)."""
    price = format(offer.terms.price, "f")
    return _encode(_OFFERS, price, offer.created_at.astimezone(UTC).isoformat(), offer.offer_id)


def offer_position(cursor: str) -> OfferPosition:
    """The `(price, created_at, offer_id)` an `offer_cursor` names; 400 `invalid_cursor` for
    anything else."""
    price, created_at, offer_id = _decode(cursor, _OFFERS, 3)
    return _price(price), _instant(created_at), offer_id


def trade_cursor(trade: Trade) -> str:
    """Where a user's trades go on after `trade` (newest first, then by id, descending)."""
    return _encode(_TRADES, trade.created_at.astimezone(UTC).isoformat(), trade.trade_id)


def trade_position(cursor: str) -> Position:
    """The `(created_at, trade_id)` a `trade_cursor` names; 400 `invalid_cursor` for anything
    else."""
    created_at, trade_id = _decode(cursor, _TRADES, 2)
    return _instant(created_at), trade_id
