"""In-memory spot storage with the MongoDB store's guarantees (tests, one process).

It keeps the same documents as the MongoDB store (`adapters.documents`), with what MongoDB does to
them on the way in: instants in UTC to the millisecond (rounded down, and compared at that
precision), integers refused beyond int64 (`OverflowError`, as encoding them raises). Each method
reads and writes with no await in between, so in one event loop it is atomic: an order is added
once per id, a conditional transition happens once, a market's batch is appended only right after
its last one, once. What it hands out is built from its documents, or copied, never shared.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from shared.paging import Position
from trading.memory_values import stored_instant
from trading.spot.adapters.documents import (
    RESTING,
    Document,
    batch_document,
    batch_from,
    fills_by_order,
    last_changes,
    market_snapshot,
    order_document,
    order_from,
    projected_fields,
)
from trading.spot.domain.book import Side, Status
from trading.spot.domain.markets import Market
from trading.spot.orders import OPEN_STATUSES, SpotBatch, SpotOrder
from trading.spot.ports import BookPosition, MarketState

_INT64: Final = range(-(2**63), 2**63)


def _stored(value: Any) -> Any:
    """`value` as it comes back from MongoDB: a new copy, instants and integers as BSON keeps them."""
    if isinstance(value, dict):
        return {key: _stored(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_stored(item) for item in value]
    if isinstance(value, datetime):
        return stored_instant(value)
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        raise OverflowError("MongoDB can only handle up to 8-byte ints")
    return value


def _first(limit: int, found: Iterable[Document]) -> list[Document]:
    """At most `limit` of `found` (0: all of them; a negative limit counts as its absolute value,
    as a cursor's does)."""
    found = list(found)
    return found[: abs(limit)] if limit else found


def _book_position(doc: Document) -> tuple[Decimal, int]:
    return doc["price_number"].to_decimal(), doc["book_sequence"]


class MemorySpotStore:
    """The spot store (`trading.spot.ports.SpotStore`) in one process's memory."""

    def __init__(self) -> None:
        # by id, in insertion order; each in the shape it has as a MongoDB document
        self._orders: dict[str, Document] = {}
        self._batches: dict[str, Document] = {}
        self._markets: dict[str, Document] = {}

    # orders (the API's side)

    async def add(self, order: SpotOrder) -> SpotOrder | None:
        document = _stored(order_document(order))
        if order.order_id in self._orders:
            return None
        self._orders[order.order_id] = document
        return order

    async def get(self, order_id: str) -> SpotOrder | None:
        doc = self._orders.get(order_id)
        return order_from(doc) if doc else None

    async def many(self, order_ids: Iterable[str]) -> dict[str, SpotOrder]:
        wanted = set(order_ids)
        return {i: order_from(doc) for i, doc in self._orders.items() if i in wanted}

    async def of_user(
        self,
        user_id: str,
        statuses: Iterable[Status],
        limit: int = 500,
        before: Position | None = None,
    ) -> list[SpotOrder]:
        wanted = {s.value for s in statuses}
        if before is not None:
            before = (stored_instant(before[0]), before[1])
        found = sorted(
            (
                doc
                for doc in self._orders.values()
                if doc["user_id"] == user_id
                and doc["status"] in wanted
                and (before is None or (doc["created_at"], doc["_id"]) < before)
            ),
            key=lambda doc: (doc["created_at"], doc["_id"]),
            reverse=True,
        )
        return [order_from(doc) for doc in _first(limit, found)]

    async def open_count(self, user_id: str) -> int:
        open_statuses = {s.value for s in OPEN_STATUSES}
        return sum(
            1
            for doc in self._orders.values()
            if doc["user_id"] == user_id and doc["status"] in open_statuses
        )

    async def request_cancel(self, order_id: str, user_id: str, at: datetime) -> SpotOrder | None:
        changes = _stored({"cancel_requested": True, "updated_at": at})
        doc = self._orders.get(order_id)
        open_statuses = {s.value for s in OPEN_STATUSES}
        if doc is None or doc["user_id"] != user_id or doc["status"] not in open_statuses:
            return None
        doc.update(changes)
        return order_from(doc)

    async def fail_pending(self, order_id: str, user_id: str, reason: str, at: datetime) -> bool:
        changes = _stored({"status": Status.FAILED.value, "reason": reason, "updated_at": at})
        doc = self._orders.get(order_id)
        if doc is None or doc["user_id"] != user_id or doc["status"] != Status.PENDING.value:
            return False
        doc.update(changes)
        return True

    async def pending_before(
        self, before: datetime, limit: int = 200, after: Position | None = None
    ) -> list[SpotOrder]:
        cutoff = stored_instant(before)
        if after is not None:
            after = (stored_instant(after[0]), after[1])
        found = sorted(
            (
                doc
                for doc in self._orders.values()
                if doc["status"] == Status.PENDING.value
                and (doc.get("asked_at") or doc["created_at"]) < cutoff
                and (after is None or (doc["created_at"], doc["_id"]) > after)
            ),
            key=lambda doc: (doc["created_at"], doc["_id"]),
        )
        return [order_from(doc) for doc in _first(limit, found)]

    async def mark_cancel_sent(self, order_id: str, at: datetime) -> None:
        doc = self._orders.get(order_id)
        if doc is not None:
            doc["cancel_sent_at"] = stored_instant(at)

    async def mark_asked(self, order_id: str, at: datetime) -> None:
        doc = self._orders.get(order_id)
        if doc is not None and doc["status"] == Status.PENDING.value:
            doc["asked_at"] = stored_instant(at)

    async def expired(
        self,
        now: datetime,
        limit: int = 200,
        after: Position | None = None,
        cancelled_before: datetime | None = None,
    ) -> list[SpotOrder]:
        cutoff = stored_instant(now)
        if after is not None:
            after = (stored_instant(after[0]), after[1])
        sent_cutoff = None if cancelled_before is None else stored_instant(cancelled_before)
        found = sorted(
            (
                doc
                for doc in self._orders.values()
                if doc["status"] in RESTING
                and doc["expires_at"] is not None
                and doc["expires_at"] <= cutoff
                and (after is None or (doc["expires_at"], doc["_id"]) > after)
                and (
                    sent_cutoff is None
                    or doc.get("cancel_sent_at") is None
                    or doc["cancel_sent_at"] < sent_cutoff
                )
            ),
            key=lambda doc: (doc["expires_at"], doc["_id"]),
        )
        return [order_from(doc) for doc in _first(limit, found)]

    async def resting(self, pair: str) -> list[SpotOrder]:
        found = [
            doc for doc in self._orders.values() if doc["pair"] == pair and doc["status"] in RESTING
        ]
        # MongoDB sorts a missing (null) book_sequence before every number
        found.sort(key=lambda doc: (doc["book_sequence"] is not None, doc["book_sequence"] or 0))
        return [order_from(doc) for doc in found]

    async def resting_sells(
        self, pair: str, limit: int = 200, after: BookPosition | None = None
    ) -> list[SpotOrder]:
        found = sorted(
            (
                doc
                for doc in self._orders.values()
                if doc["pair"] == pair
                and doc["side"] == Side.SELL.value
                and doc["status"] in RESTING
                and doc["price_number"] is not None
                and doc["book_sequence"] is not None
                and (after is None or _book_position(doc) > after)
            ),
            key=_book_position,
        )
        return [order_from(doc) for doc in _first(limit, found)]

    # the matcher's decisions

    async def add_batch(self, batch: SpotBatch, at: datetime) -> bool:
        stored = self._batches.get(batch.batch_id)
        if stored is not None:
            return batch_from(stored) == batch
        if batch.first != self._last(batch.pair) + 1:
            return False  # not the market's next batch: another matcher's numbers
        # may raise (a number beyond int64) before anything is stored
        self._batches[batch.batch_id] = _stored(batch_document(batch, at))
        return True

    def _of_market(self, pair: str) -> list[Document]:
        return sorted(
            (doc for doc in self._batches.values() if doc["pair"] == pair),
            key=lambda doc: int(doc["last"]),
        )

    def _last(self, pair: str) -> int:
        lasts = (int(doc["last"]) for doc in self._batches.values() if doc["pair"] == pair)
        return max(lasts, default=0)

    async def batches_after(self, pair: str, sequence: int) -> list[SpotBatch]:
        return [batch_from(doc) for doc in self._of_market(pair) if doc["last"] > sequence]

    async def undispatched(
        self, pair: str, *, after: int = 0, limit: int | None = None
    ) -> list[SpotBatch]:
        found = [d for d in self._of_market(pair) if not d["dispatched"] and d["last"] > after]
        return [batch_from(doc) for doc in (found[:limit] if limit else found)]

    async def mark_dispatched(self, batch: SpotBatch) -> None:
        stored = self._batches.get(batch.batch_id)
        if stored is not None:
            stored["dispatched"] = True

    async def last_sequence(self, pair: str) -> int:
        return self._last(pair)

    async def market_state(self, pair: str) -> MarketState | None:
        state = self._markets.get(pair)
        return copy.deepcopy(state) if state is not None else None

    async def project(self, batch: SpotBatch, market: Market, at: datetime) -> None:
        fills = fills_by_order(batch, market)
        updates = {
            order_id: (_stored(projected_fields(change, batch, market, at)), fills.get(order_id))
            for order_id, change in last_changes(batch).items()
        }
        snapshot = _stored(market_snapshot(batch, market, at))
        for order_id, (fields, appended) in updates.items():
            doc = self._orders.get(order_id)
            if doc is not None and doc["version"] < batch.last:
                doc.update(fields)
                doc["fills"].extend(appended or [])
        state = self._markets.get(batch.pair)
        if state is None or state["sequence"] < batch.last:
            self._markets[batch.pair] = {"_id": batch.pair} | snapshot
