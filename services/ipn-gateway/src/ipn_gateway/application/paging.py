"""Cursors of newest-first lists: the position (created_at, id) of the last item of a page."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime


def encode_cursor(created_at: datetime, item_id: str) -> str:
    text = f"{created_at.astimezone(UTC).isoformat()}|{item_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names; ValueError for anything `encode_cursor` did not make."""
    if len(cursor) > 200:
        raise ValueError("cursor too long")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("cursor is not base64") from None
    stamp, separator, item_id = text.partition("|")
    created_at = datetime.fromisoformat(stamp)
    if not separator or not item_id or created_at.tzinfo is None:
        raise ValueError("cursor is not a position")
    try:
        # In UTC, as stored: an offset that takes it past year 1 or 9999 (which no stored record
        # has) failed only when MongoDB's driver encoded it, as a 500.
        return created_at.astimezone(UTC), item_id
    except OverflowError:
        raise ValueError("cursor is not a position") from None
