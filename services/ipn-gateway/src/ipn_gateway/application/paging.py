"""Cursors of the withdrawals list, newest first: the position (created_at, id) of the last item
of a page (`shared.paging` says what a cursor is)."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from shared.paging import Position, cursor_position, position_cursor

# Which list a cursor was made for.
_WITHDRAWALS: Final = "w"


def encode_cursor(created_at: datetime, item_id: str) -> str:
    return position_cursor(_WITHDRAWALS, (created_at, item_id))


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names; ValueError for anything `encode_cursor` did not make."""
    return cursor_position(cursor, _WITHDRAWALS)
