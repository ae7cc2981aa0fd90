"""What spot trading needs from storage: orders, the matcher's batches of decisions and each
market's projection state. Two adapters keep them, MongoDB (`adapters.mongo`, what the service runs
on) and memory (`adapters.memory`); one contract suite runs on both.

Both keep the documents of `adapters.documents`, so what is read back is what those hold:
- instants in UTC to the millisecond (rounded down; a naive one is taken as UTC), and queries
  compare them at that precision;
- an order's amounts (`amount`, `quote_amount`, `lock_amount`, `filled_amount`, a fill's amount
  and fee) exact, without trailing zeros ("0.0100" comes back as "0.01"); prices (the order's, a
  fill's, the snapshot's) exact with the decimals they were given ("100.00" stays "100.00");
  integers of units and steps exact at any size; sequence numbers within int64 (beyond it, the
  write raises `OverflowError` and stores nothing).
- Everything handed out is a copy: changing it changes nothing stored, and changing an object
  after handing it to the store changes nothing stored either.

Each method is one atomic step against concurrent callers (one conditional single-document write,
or one insert), except `add_batch` and `project`, whose steps are spelt out below. A `limit` is
a positive number of results (0: no limit).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from shared.paging import Position
from trading.spot.domain.book import Status
from trading.spot.domain.markets import Market
from trading.spot.orders import SpotBatch, SpotOrder

# A market's projection state, None until a batch of it is projected: `_id` (the pair),
# `sequence` (the `last` of the batch projected), `bids` and `asks` (best first, as
# [price with the tick's decimals, amount] strings) and `updated_at`. A copy.
type MarketState = dict[str, Any]

# Where a resting order is in its side of the book: its price, then its `book_sequence`.
type BookPosition = tuple[Decimal, int]


class SpotStore(Protocol):
    # orders (the API's side)

    async def add(self, order: SpotOrder) -> SpotOrder | None:
        """Stores a new order (its `version` 0, `updated_at` its `created_at` unless it has one):
        `order` itself, not read back, if stored; None if an order with its `order_id` exists
        (a client_order_id used again: its id is derived from the user and that id), whatever
        either says, and the stored one is left as it was. Of racing adds of one id, one stores.
        """
        ...

    async def get(self, order_id: str) -> SpotOrder | None: ...

    async def many(self, order_ids: Iterable[str]) -> dict[str, SpotOrder]:
        """The stored ones of `order_ids` by id (unknown ids are absent; repeats count once)."""
        ...

    async def of_user(
        self,
        user_id: str,
        statuses: Iterable[Status],
        limit: int = 500,
        before: Position | None = None,
    ) -> list[SpotOrder]:
        """The user's orders in one of `statuses`, newest first (by `created_at`, then by
        `order_id`, both descending), only those before `before` (the `(created_at, order_id)` of
        one this returned) when given, at most `limit`. Neither value ever changes on an order:
        a page read before another neither repeats nor skips one."""
        ...

    async def open_count(self, user_id: str) -> int:
        """How many of the user's orders are pending, open or partially filled."""
        ...

    async def request_cancel(self, order_id: str, user_id: str, at: datetime) -> SpotOrder | None:
        """Flags the order of `user_id` for cancelling if it is pending, open or partially filled
        (`cancel_requested`, `updated_at` = `at`; nothing else changes) and answers it as stored
        now. None, changing nothing, if it is closed, another user's or unknown. Flagging is not
        cancelling: the matcher cancels it (a pending one on its lock, a resting one from the
        book). A second request while it is still open flags it again and answers it again."""
        ...

    async def fail_pending(self, order_id: str, user_id: str, reason: str, at: datetime) -> bool:
        """pending → failed (`reason`, `updated_at` = `at`) for an order of `user_id`: True if this
        call made the change. False, changing nothing, if the order is not pending (any other
        status, including failed already: of racing calls one wins), another user's or unknown.
        """
        ...

    async def pending_before(
        self, before: datetime, limit: int = 200, after: Position | None = None
    ) -> list[SpotOrder]:
        """Pending orders whose lock was last sent strictly before `before` (when sent again,
        `asked_at`, else when created: it is sent right after), oldest first (by `created_at`,
        then `order_id`), only those after `after` (a `(created_at, order_id)` of an order this
        returned) when given, at most `limit`."""
        ...

    async def mark_asked(self, order_id: str, at: datetime) -> None:
        """The lock of a pending order was sent again at `at` (another order is untouched;
        `updated_at` stays)."""
        ...

    async def expired(
        self,
        now: datetime,
        limit: int = 200,
        after: Position | None = None,
        cancelled_before: datetime | None = None,
    ) -> list[SpotOrder]:
        """Open and partially filled orders whose `expires_at` is at or before `now` (not pending
        ones, not those without expiry), the earliest expiry first (then by `order_id`), only
        those after `after` (the `(expires_at, order_id)` of one this returned) when given, and
        with `cancelled_before` only those whose cancel was not sent since (`mark_cancel_sent`),
        at most `limit`."""
        ...

    async def mark_cancel_sent(self, order_id: str, at: datetime) -> None:
        """The cancel of an expired order was sent at `at` (`updated_at` stays)."""
        ...

    async def resting(self, pair: str) -> list[SpotOrder]:
        """The market's open and partially filled orders in `book_sequence` order (time priority;
        an order without one first)."""
        ...

    async def resting_sells(
        self, pair: str, limit: int = 200, after: BookPosition | None = None
    ) -> list[SpotOrder]:
        """The market's open and partially filled sell orders in the order the book fills them:
        the lowest price first, then time priority (`book_sequence`); only those after `after`
        (the `(price, book_sequence)` of one this returned) when given, at most `limit`. An order
        without a price or a `book_sequence` is not among them (the matcher rests none)."""
        ...

    # the matcher's decisions

    async def add_batch(self, batch: SpotBatch, at: datetime) -> bool:
        """Appends the batch (undispatched, created at `at`) to its market, under its id (its
        market and first sequence number), only if it starts right after the market's last
        stored batch: `batch.first` is the highest `last` of the market's batches plus one (1 for
        a market without batches). True if the stored batch is `batch`: appended now, or already
        stored with the same decisions (a retry after a lost answer). False, storing nothing,
        otherwise: other decisions under that number, or a batch that does not follow (after a
        gap, or over numbers a stored batch covers). The caller is fenced.

        So a market's batches are a chain of numbers from 1, without gaps or overlaps, and one
        position in it is taken once: of batches racing to follow the same last batch, whatever
        their first and last numbers, exactly one gets True.
        """
        ...

    async def batches_after(self, pair: str, sequence: int) -> list[SpotBatch]:
        """The market's batches whose `last` is above `sequence`, by `last`, ascending."""
        ...

    async def undispatched(
        self, pair: str, *, after: int = 0, limit: int | None = None
    ) -> list[SpotBatch]:
        """The market's batches not marked dispatched whose `last` is above `after`, by `last`,
        ascending; at most `limit` of them when given (0 or None: no limit, as MongoDB's)."""
        ...

    async def mark_dispatched(self, batch: SpotBatch) -> None:
        """Marks the batch stored under `batch`'s id dispatched (for good); nothing if none is."""
        ...

    async def last_sequence(self, pair: str) -> int:
        """The highest `last` of the market's batches; 0 if it has none."""
        ...

    async def market_state(self, pair: str) -> MarketState | None: ...

    async def project(self, batch: SpotBatch, market: Market, at: datetime) -> None:
        """Applies `batch` to its orders and to its market's state.

        Each order of `batch.changes` takes its last change in the batch (status, reason,
        filled_amount, remaining, hold, book_sequence; `updated_at` = `at`), gets the batch's
        fills as it sees them appended, and `version` = `batch.last`, if it is stored and its
        `version` is below `batch.last`: guarded by the sequence only, not by its status (the
        batch decides the status). The market's state becomes `batch.last` with the batch's depth
        if it is below `batch.last` or absent. So projecting a batch again, or an older batch
        after a newer one, changes nothing. One atomic step per order and one for the market:
        a concurrent reader may see some orders updated before others.
        """
        ...
