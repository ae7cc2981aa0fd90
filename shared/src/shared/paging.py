"""Where a background pass (a relay, a sweeper, an ask-again pass) goes on in the records it
pages through, oldest first by a position `(instant, id)`.

Each pass takes one page of the records due. Were every pass to start from the oldest, records
that stay due (a lock the wallet keeps refusing, an order no matcher closes, a command that cannot
be built) would fill every page and hold back every record behind them. So the next pass goes on
after the last record of a full page, and from the oldest again after a short page: it reached the
end, and what it passed over has its turn again.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

# A record's place in a pass's order: its instant (created, updated, due), then its id.
type Position = tuple[datetime, str]


@dataclass(slots=True)
class PageCursor[R]:
    """The `after` of a pass's next page read: None reads from the oldest."""

    # A record's position; None for one without (the pass starts from the oldest again).
    position_of: Callable[[R], Position | None]
    after: Position | None = None

    def advance(self, page: Sequence[R], limit: int) -> None:
        """Move past `page`, read with `limit`: after its last record when it was full, back to
        the oldest when it was short."""
        self.after = self.position_of(page[-1]) if 0 < limit == len(page) else None


# Lists a client pages through -------------------------------------------------------------------
#
# A client's list answers at most `limit` items and an opaque cursor naming where the next page
# starts: the position of the page's last item in the list's order, which is total (an id breaks
# every tie) and made of values an item never changes, so an item that was there when paging began
# is on exactly one page. What a cursor holds is the service's business; a client only hands it
# back, and anything else is refused (ValueError here, 400 `invalid_cursor` at the edge).

MAX_CURSOR_LENGTH: Final = 200


@dataclass(frozen=True, slots=True)
class Page[T]:
    items: Sequence[T]
    next_cursor: str | None


def page_of[T](found: Sequence[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """The page of `found`, read with `limit + 1`: the extra item only tells that more follow."""
    items = found[:limit]
    return Page(items, cursor_of(items[-1]) if len(found) > limit else None)


def encode_cursor(kind: str, *parts: str) -> str:
    """A cursor of the list `kind` holding `parts` (only the last may contain a "|")."""
    return base64.urlsafe_b64encode("|".join((kind, *parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, count: int) -> list[str]:
    """The `count` parts `encode_cursor(kind, ...)` wrote; ValueError for any other text (another
    list's cursor, another spelling of the same bytes, anything too long)."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise ValueError("cursor too long")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("cursor is not one this API wrote") from None
    tag, _, rest = text.partition("|")
    parts = rest.split("|", count - 1)
    if encode_cursor(tag, rest) != cursor or tag != kind or len(parts) != count or not all(parts):
        raise ValueError("cursor is not one this API wrote")
    return parts


def instant_text(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat()


def instant_of(text: str) -> datetime:
    """The UTC instant `instant_text` wrote; ValueError for anything else."""
    try:
        instant = datetime.fromisoformat(text)
        if instant.tzinfo is None:
            raise ValueError("an instant names its offset")
        # In UTC, as stored: an offset taking it past year 1 or 9999 would fail only when MongoDB's
        # driver encoded it, as a 500.
        return instant.astimezone(UTC)
    except OverflowError:
        raise ValueError("no stored instant") from None


def position_cursor(kind: str, position: Position) -> str:
    """A cursor of the list `kind` naming `(instant, id)`."""
    instant, item_id = position
    return encode_cursor(kind, instant_text(instant), item_id)


def cursor_position(cursor: str, kind: str) -> Position:
    """The `(instant, id)` a `position_cursor(kind, ...)` names; ValueError for anything else."""
    instant, item_id = decode_cursor(cursor, kind, 2)
    return instant_of(instant), item_id
