"""Where a background pass (a relay, a sweeper, an ask-again pass) goes on in the records it
pages through, oldest first by a position `(instant, id)`.

Each pass takes one page of the records due. Were every pass to start from the oldest, records
that stay due (a lock the wallet keeps refusing, an order no matcher closes, a command that cannot
be built) would fill every page and hold back every record behind them. So the next pass goes on
after the last record of a full page, and from the oldest again after a short page: it reached the
end, and what it passed over has its turn again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

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
