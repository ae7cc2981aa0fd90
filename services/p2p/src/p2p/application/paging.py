"""The cursors of the p2p lists (the active offers, a user's own trades): which position each
names, in the lists' own orders (`shared.paging` says what a cursor is)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

from p2p.application.ports import Offer, OfferPosition, Trade
from p2p.domain.errors import Refused
from shared.paging import (
    Position,
    cursor_position,
    decode_cursor,
    encode_cursor,
    instant_of,
    instant_text,
    position_cursor,
)

DEFAULT_PAGE_SIZE: Final = 200
MAX_PAGE_SIZE: Final = 200

# Which list a cursor was made for: one list's cursor is not another's.
_OFFERS: Final = "o"
_TRADES: Final = "t"
# A stored price as plain text; a stored decimal holds at most 34 significant digits.
_PRICE: Final = re.compile(r"[0-9]{1,40}(\.[0-9]{1,40})?")
_MAX_PRICE_DIGITS: Final = 34


def invalid_cursor() -> Refused:
    return Refused("invalid_cursor", "cursor is not one this API returned")


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Refused("invalid_limit", f"limit is 1 to {MAX_PAGE_SIZE}")


def _price(text: str) -> Decimal:
    if not _PRICE.fullmatch(text):
        raise ValueError("not a stored price")
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise ValueError("not a stored price") from None
    if len(price.as_tuple().digits) > _MAX_PRICE_DIGITS:
        raise ValueError("not a stored price")
    return price


def offer_cursor(offer: Offer) -> str:
    """Where the active offers go on after `offer` (cheapest first, then oldest, then by id)."""
    price = format(offer.terms.price, "f")
    return encode_cursor(_OFFERS, price, instant_text(offer.created_at), offer.offer_id)


def offer_position(cursor: str) -> OfferPosition:
    """The `(price, created_at, offer_id)` an `offer_cursor` names; 400 `invalid_cursor` for
    anything else."""
    try:
        price, created_at, offer_id = decode_cursor(cursor, _OFFERS, 3)
        return _price(price), instant_of(created_at), offer_id
    except ValueError:
        raise invalid_cursor() from None


def trade_cursor(trade: Trade) -> str:
    """Where a user's trades go on after `trade` (newest first, then by id, descending)."""
    return position_cursor(_TRADES, (trade.created_at, trade.trade_id))


def trade_position(cursor: str) -> Position:
    """The `(created_at, trade_id)` a `trade_cursor` names; 400 `invalid_cursor` for anything
    else."""
    try:
        return cursor_position(cursor, _TRADES)
    except ValueError:
        raise invalid_cursor() from None
