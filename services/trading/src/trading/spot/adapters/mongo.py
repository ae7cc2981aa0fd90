"""MongoDB: orders (`spot_orders`), the matcher's decisions (`spot_batches`, insert-only) and each
market's projection state and book snapshot (`spot_markets`). Single-document operations only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime

from bson import Decimal128
from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.mongo import drop_replaced_indexes
from shared.paging import Position
from trading.mongo_values import oldest_first
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


class MongoSpotStore:
    """The spot store (`trading.spot.ports.SpotStore`) over MongoDB."""

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._orders: AsyncCollection[Document] = database["spot_orders"]
        self._batches: AsyncCollection[Document] = database["spot_batches"]
        self._markets: AsyncCollection[Document] = database["spot_markets"]

    async def ensure_indexes(self) -> None:
        # a user's orders newest first, a page at a time (the order list)
        await self._orders.create_index(
            [("user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]
        )
        await self._orders.create_index(
            [("pair", ASCENDING), ("status", ASCENDING), ("book_sequence", ASCENDING)]
        )
        # a user's open orders counted (the cap on them)
        await self._orders.create_index([("user_id", ASCENDING), ("status", ASCENDING)])
        # a market's resting sells, cheapest first, a page at a time (a market buy's lock)
        await self._orders.create_index(
            [
                ("pair", ASCENDING),
                ("side", ASCENDING),
                ("status", ASCENDING),
                ("price_number", ASCENDING),
                ("book_sequence", ASCENDING),
            ]
        )
        # expired resting orders, the earliest expiry first, a page at a time (the expiry sweep)
        await self._orders.create_index(
            [("status", ASCENDING), ("expires_at", ASCENDING), ("_id", ASCENDING)]
        )
        # pending orders oldest first, a page at a time (the lock relay)
        await self._orders.create_index(
            [("status", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
        )
        await self._batches.create_index(
            [("pair", ASCENDING), ("dispatched", ASCENDING), ("last", ASCENDING)]
        )
        # a market's last batch (`last_sequence`, the check in `add_batch`), and no two batches
        # of a market ending at one number
        await self._batches.create_index([("pair", ASCENDING), ("last", ASCENDING)], unique=True)
        # Earlier versions' indexes that the expiry sweep's and the order list's replaced (each a
        # prefix of its successor).
        await drop_replaced_indexes(
            self._orders, ["status_1_expires_at_1", "user_id_1_created_at_-1"]
        )
        # Open orders an earlier version stored have no `price_number`: without it a resting
        # sell is missing from `resting_sells`.
        await self._orders.update_many(
            {
                "status": {"$in": [s.value for s in OPEN_STATUSES]},
                "price": {"$ne": None},
                "price_number": {"$exists": False},
            },
            [{"$set": {"price_number": {"$toDecimal": "$price"}}}],
        )

    # orders (the API's side)

    async def add(self, order: SpotOrder) -> SpotOrder | None:
        """Store a new order; None when its id exists (the same client_order_id again)."""
        try:
            await self._orders.insert_one(order_document(order))
        except DuplicateKeyError:
            return None
        return order

    async def get(self, order_id: str) -> SpotOrder | None:
        doc = await self._orders.find_one({"_id": order_id})
        return order_from(doc) if doc else None

    async def many(self, order_ids: Iterable[str]) -> dict[str, SpotOrder]:
        cursor = self._orders.find({"_id": {"$in": list(order_ids)}})
        return {doc["_id"]: order_from(doc) async for doc in cursor}

    async def of_user(
        self,
        user_id: str,
        statuses: Iterable[Status],
        limit: int = 500,
        before: Position | None = None,
    ) -> list[SpotOrder]:
        query: Document = {"user_id": user_id, "status": {"$in": [s.value for s in statuses]}}
        if before is not None:
            # Before (created_at, _id); the bound on created_at keeps the index scan short.
            at, last_id = before
            query["created_at"] = {"$lte": at}
            query["$or"] = [{"created_at": {"$lt": at}}, {"_id": {"$lt": last_id}}]
        newest_first = [("created_at", DESCENDING), ("_id", DESCENDING)]
        cursor = self._orders.find(query).sort(newest_first).limit(limit)
        return [order_from(doc) async for doc in cursor]

    async def open_count(self, user_id: str) -> int:
        return await self._orders.count_documents(
            {"user_id": user_id, "status": {"$in": [s.value for s in OPEN_STATUSES]}}
        )

    async def request_cancel(self, order_id: str, user_id: str, at: datetime) -> SpotOrder | None:
        """Flag an open order for cancelling (one conditional update); None when it is not open."""
        doc = await self._orders.find_one_and_update(
            {
                "_id": order_id,
                "user_id": user_id,
                "status": {"$in": [s.value for s in OPEN_STATUSES]},
            },
            {"$set": {"cancel_requested": True, "updated_at": at}},
            return_document=ReturnDocument.AFTER,
        )
        return order_from(doc) if doc else None

    async def fail_pending(self, order_id: str, user_id: str, reason: str, at: datetime) -> bool:
        """A refused lock ends a pending order of `user_id` (it never reached the book)."""
        updated = await self._orders.update_one(
            {"_id": order_id, "user_id": user_id, "status": Status.PENDING.value},
            {"$set": {"status": Status.FAILED.value, "reason": reason, "updated_at": at}},
        )
        return updated.modified_count == 1

    async def pending_before(
        self, before: datetime, limit: int = 200, after: Position | None = None
    ) -> list[SpotOrder]:
        query = {
            "status": Status.PENDING.value,
            "created_at": {"$lt": before},
            "$or": [{"asked_at": None}, {"asked_at": {"$lt": before}}],
        }
        return [order_from(doc) async for doc in oldest_first(self._orders, query, limit, after)]

    async def mark_cancel_sent(self, order_id: str, at: datetime) -> None:
        await self._orders.update_one({"_id": order_id}, {"$set": {"cancel_sent_at": at}})

    async def mark_asked(self, order_id: str, at: datetime) -> None:
        await self._orders.update_one(
            {"_id": order_id, "status": Status.PENDING.value}, {"$set": {"asked_at": at}}
        )

    async def expired(
        self,
        now: datetime,
        limit: int = 200,
        after: Position | None = None,
        cancelled_before: datetime | None = None,
    ) -> list[SpotOrder]:
        """Open orders whose time ran out (the matcher cancels them; pending ones on locking),
        the earliest expiry first, a page after `after`."""
        # "$ne": None spelled out: an order without expiry must never match the date comparison
        due: Document = {"status": {"$in": list(RESTING)}, "expires_at": {"$ne": None, "$lte": now}}
        if cancelled_before is not None:
            due["$or"] = [{"cancel_sent_at": None}, {"cancel_sent_at": {"$lt": cancelled_before}}]
        page = oldest_first(self._orders, due, limit, after, field="expires_at")
        return [order_from(doc) async for doc in page]

    async def resting(self, pair: str) -> list[SpotOrder]:
        cursor = self._orders.find({"pair": pair, "status": {"$in": list(RESTING)}}).sort(
            "book_sequence", ASCENDING
        )
        return [order_from(doc) async for doc in cursor]

    async def resting_sells(
        self, pair: str, limit: int = 200, after: BookPosition | None = None
    ) -> list[SpotOrder]:
        query: Document = {
            "pair": pair,
            "side": Side.SELL.value,
            "status": {"$in": list(RESTING)},
            "price_number": {"$ne": None},
            "book_sequence": {"$ne": None},
        }
        if after is not None:
            # After (price, book_sequence); the bound on the price keeps the index scan short.
            price, sequence = Decimal128(after[0]), after[1]
            query["price_number"] = {"$gte": price}
            query["$or"] = [
                {"price_number": {"$gt": price}},
                {"price_number": price, "book_sequence": {"$gt": sequence}},
            ]
        cheapest_first = [("price_number", ASCENDING), ("book_sequence", ASCENDING)]
        cursor = self._orders.find(query).sort(cheapest_first).limit(limit)
        return [order_from(doc) async for doc in cursor]

    # the matcher's decisions

    async def add_batch(self, batch: SpotBatch, at: datetime) -> bool:
        """Append a batch right after the market's last one. True if these decisions are the
        market's: stored now, or by an earlier try whose answer was lost. False otherwise: the
        store fences a matcher whose book is stale.

        A conditional insert: the batch is inserted only if its first number follows the highest
        `last` read, and its `_id` is (pair, first). Every stored batch followed the one before
        it, so a market's batches are a chain from 1 and (pair, first) names one place in it: of
        writers racing to follow one batch, whatever they read and whatever their last numbers,
        one insert gets that `_id` and the others collide on it (the unique (pair, last) index is
        a second guard). A batch whose first number does not follow is never inserted."""
        if batch.first == await self.last_sequence(batch.pair) + 1:
            try:
                await self._batches.insert_one(batch_document(batch, at))
            except DuplicateKeyError:
                pass  # another writer appended there first, or our own earlier try did
            else:
                return True
        stored = await self._batches.find_one({"_id": batch.batch_id})
        return stored is not None and batch_from(stored) == batch

    async def batches_after(self, pair: str, sequence: int) -> list[SpotBatch]:
        cursor = self._batches.find({"pair": pair, "last": {"$gt": sequence}}).sort(
            "last", ASCENDING
        )
        return [batch_from(doc) async for doc in cursor]

    async def undispatched(
        self, pair: str, *, after: int = 0, limit: int | None = None
    ) -> list[SpotBatch]:
        query = {"pair": pair, "dispatched": False, "last": {"$gt": after}}
        cursor = self._batches.find(query).sort("last", ASCENDING).limit(limit or 0)
        return [batch_from(doc) async for doc in cursor]

    async def mark_dispatched(self, batch: SpotBatch) -> None:
        await self._batches.update_one({"_id": batch.batch_id}, {"$set": {"dispatched": True}})

    async def last_sequence(self, pair: str) -> int:
        doc = await self._batches.find_one({"pair": pair}, sort=[("last", DESCENDING)])
        return int(doc["last"]) if doc else 0

    async def market_state(self, pair: str) -> MarketState | None:
        return await self._markets.find_one({"_id": pair})

    async def project(self, batch: SpotBatch, market: Market, at: datetime) -> None:
        """Orders and the market snapshot after `batch`; a second projection changes nothing."""
        fills = fills_by_order(batch, market)
        updates = [
            UpdateOne(
                {"_id": order_id, "version": {"$lt": batch.last}},
                {
                    "$set": projected_fields(change, batch, market, at),
                    "$push": {"fills": {"$each": fills.get(order_id, [])}},
                },
            )
            for order_id, change in last_changes(batch).items()
        ]
        if updates:
            await self._orders.bulk_write(updates, ordered=False)
        with contextlib.suppress(DuplicateKeyError):  # a later batch is already projected
            await self._markets.update_one(
                {"_id": batch.pair, "sequence": {"$lt": batch.last}},
                {"$set": market_snapshot(batch, market, at)},
                upsert=True,
            )
