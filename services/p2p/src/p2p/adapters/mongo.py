"""MongoDB stores: single-document atomic writes only (inserts on unique keys, conditional updates
with the expected status in the filter). Amounts are Decimal128; every datetime is UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from bson import Decimal128
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from p2p.application.ports import (
    Expected,
    Offer,
    OfferPosition,
    OutboxEntry,
    Trade,
    TradeChanges,
)
from p2p.domain.offers import OfferStatus, OfferTerms
from p2p.domain.trades import IN_FLIGHT, UNPAID, TradeStatus
from shared.http.idempotency import MongoIdempotencyStore
from shared.messaging import WalletCommand
from shared.mongo import decimal_of as _decimal
from shared.mongo import drop_replaced_indexes, oldest_first, unpublished
from shared.mongo import utc as _utc
from shared.outbox import Unpublished
from shared.paging import Position

type Document = dict[str, Any]

OFFERS: Final = "p2p_offers"
TRADES: Final = "p2p_trades"


def _outbox_document(entry: OutboxEntry) -> Document:
    return {
        "command_id": entry.command_id,
        "command": entry.as_stored(),
        "published": entry.published,
        "created_at": entry.created_at,
    }


def _offer_document(offer: Offer) -> Document:
    terms = offer.terms
    return {
        "_id": offer.offer_id,
        "seller_id": offer.seller_id,
        "status": offer.status.value,
        "currency": terms.currency,
        "fiat_currency": terms.fiat_currency,
        "price": Decimal128(terms.price),
        "min_amount": Decimal128(terms.min_amount),
        "max_amount": Decimal128(terms.max_amount),
        "payment_methods": list(terms.payment_methods),
        "payment_window_minutes": terms.payment_window_minutes,
        "created_at": offer.created_at,
        "updated_at": offer.updated_at,
    }


def _offer(document: Document) -> Offer:
    return Offer(
        offer_id=document["_id"],
        seller_id=document["seller_id"],
        status=OfferStatus(document["status"]),
        terms=OfferTerms(
            currency=document["currency"],
            fiat_currency=document["fiat_currency"],
            price=_decimal(document["price"]),
            min_amount=_decimal(document["min_amount"]),
            max_amount=_decimal(document["max_amount"]),
            payment_methods=tuple(document["payment_methods"]),
            payment_window_minutes=document["payment_window_minutes"],
        ),
        created_at=_utc(document["created_at"]),
        updated_at=_utc(document["updated_at"]),
    )


_AMOUNTS: Final = ("price", "amount", "fee", "fiat_amount")
_OPTIONAL: Final = (
    "reason",
    "cancelled_by",
    "disputed_by",
    "resolved_by",
    "resolution",
    "paid_at",
)


def _trade_document(trade: Trade) -> Document:
    document: Document = {
        "_id": trade.trade_id,
        "offer_id": trade.offer_id,
        "seller_id": trade.seller_id,
        "buyer_id": trade.buyer_id,
        "currency": trade.currency,
        "fiat_currency": trade.fiat_currency,
        "payment_methods": list(trade.payment_methods),
        "payment_window_minutes": trade.payment_window_minutes,
        "payment_deadline": trade.payment_deadline,
        "status": trade.status.value,
        "escrow_locked": trade.escrow_locked,
        "created_at": trade.created_at,
        "updated_at": trade.updated_at,
        "notes": list(trade.notes),
        "outbox": [_outbox_document(e) for e in trade.outbox],
    }
    for name in _AMOUNTS:
        document[name] = Decimal128(getattr(trade, name))
    for name in _OPTIONAL:
        document[name] = getattr(trade, name)
    return document


def _trade(document: Document) -> Trade:
    paid_at = document.get("paid_at")
    return Trade(
        trade_id=document["_id"],
        offer_id=document["offer_id"],
        seller_id=document["seller_id"],
        buyer_id=document["buyer_id"],
        currency=document["currency"],
        fiat_currency=document["fiat_currency"],
        price=_decimal(document["price"]),
        amount=_decimal(document["amount"]),
        fee=_decimal(document["fee"]),
        fiat_amount=_decimal(document["fiat_amount"]),
        payment_methods=tuple(document["payment_methods"]),
        payment_window_minutes=document["payment_window_minutes"],
        payment_deadline=_utc(document["payment_deadline"]),
        status=TradeStatus(document["status"]),
        escrow_locked=document["escrow_locked"],
        created_at=_utc(document["created_at"]),
        updated_at=_utc(document["updated_at"]),
        reason=document.get("reason"),
        cancelled_by=document.get("cancelled_by"),
        disputed_by=document.get("disputed_by"),
        resolved_by=document.get("resolved_by"),
        resolution=document.get("resolution"),
        paid_at=_utc(paid_at) if paid_at else None,
        notes=tuple(document.get("notes", ())),
        # A command the command model refuses (an earlier version's) is kept as stored: the
        # trade is read all the same, and the places that send it report it.
        outbox=tuple(
            OutboxEntry.read(
                e["command"], created_at=_utc(e["created_at"]), published=e["published"]
            )
            for e in document.get("outbox", ())
        ),
    )


def _filter(trade_id: str, expected: Expected) -> Document:
    query: Document = {"_id": trade_id, "status": expected.status.value}
    if expected.escrow_locked is not None:
        query["escrow_locked"] = expected.escrow_locked
    deadline: Document = {}
    if expected.deadline_passed_at is not None:
        deadline["$lte"] = expected.deadline_passed_at
    if expected.deadline_open_at is not None:
        deadline["$gt"] = expected.deadline_open_at
    if deadline:
        query["payment_deadline"] = deadline
    return query


async def _insert_once(
    collection: AsyncCollection[Document], document: Document
) -> Document | None:
    """Store a new document; None when stored, else the one already stored under its `_id`
    (offers and trades are never deleted)."""
    try:
        await collection.insert_one(document)
    except DuplicateKeyError:
        stored = await collection.find_one({"_id": document["_id"]})
        assert stored is not None
        return stored
    return None


class MongoOffers:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._offers = database[OFFERS]

    async def insert(self, offer: Offer) -> Offer | None:
        stored = await _insert_once(self._offers, _offer_document(offer))
        return None if stored is None else _offer(stored)

    async def get(self, offer_id: str) -> Offer | None:
        document = await self._offers.find_one({"_id": offer_id})
        return _offer(document) if document else None

    async def list_active(
        self,
        currency: str | None,
        fiat_currency: str | None,
        limit: int,
        after: OfferPosition | None = None,
    ) -> Sequence[Offer]:
        query: Document = {"status": OfferStatus.ACTIVE.value}
        if currency is not None:
            query["currency"] = currency
        if fiat_currency is not None:
            query["fiat_currency"] = fiat_currency
        if after is not None:
            # After (price, created_at, _id); the bound on price keeps the index scan short.
            price, at, last_id = after
            query["price"] = {"$gte": Decimal128(price)}
            query["$or"] = [
                {"price": {"$gt": Decimal128(price)}},
                {"created_at": {"$gt": at}},
                {"created_at": at, "_id": {"$gt": last_id}},
            ]
        cursor = self._offers.find(query).sort(
            [("price", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
        )
        return [_offer(d) async for d in cursor.limit(limit)]

    async def withdraw(self, offer_id: str, now: datetime) -> Offer | None:
        document = await self._offers.find_one_and_update(
            {"_id": offer_id, "status": OfferStatus.ACTIVE.value},
            {"$set": {"status": OfferStatus.WITHDRAWN.value, "updated_at": now}},
            return_document=ReturnDocument.AFTER,
        )
        return _offer(document) if document else None


class MongoTrades:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._trades = database[TRADES]

    async def insert(self, trade: Trade) -> Trade | None:
        stored = await _insert_once(self._trades, _trade_document(trade))
        return None if stored is None else _trade(stored)

    async def get(self, trade_id: str) -> Trade | None:
        document = await self._trades.find_one({"_id": trade_id})
        return _trade(document) if document else None

    async def list_for(
        self, user_id: str, limit: int, before: Position | None = None
    ) -> Sequence[Trade]:
        # One branch per party, each served by its index; before (created_at, _id) when given,
        # the bound on created_at keeping the scan short.
        branches: list[Document] = []
        for party in ("buyer_id", "seller_id"):
            branch: Document = {party: user_id}
            if before is not None:
                at, last_id = before
                branch["created_at"] = {"$lte": at}
                branch["$or"] = [{"created_at": {"$lt": at}}, {"_id": {"$lt": last_id}}]
            branches.append(branch)
        newest_first = [("created_at", DESCENDING), ("_id", DESCENDING)]
        cursor = self._trades.find({"$or": branches}).sort(newest_first).limit(limit)
        return [_trade(d) async for d in cursor]

    async def move(
        self,
        trade_id: str,
        expected: Expected,
        to: TradeStatus,
        changes: TradeChanges,
        command: WalletCommand | None,
        now: datetime,
    ) -> Trade | None:
        update: Document = {"$set": {**changes, "status": to.value, "updated_at": now}}
        if command is not None:
            update["$push"] = {"outbox": _outbox_document(OutboxEntry(command, created_at=now))}
        document = await self._trades.find_one_and_update(
            _filter(trade_id, expected), update, return_document=ReturnDocument.AFTER
        )
        return _trade(document) if document else None

    async def note(self, trade_id: str, note: str, now: datetime) -> None:
        # Once per text: a redelivered refusal notes nothing new.
        await self._trades.update_one(
            {"_id": trade_id, "notes": {"$ne": note}},
            {"$push": {"notes": note}, "$set": {"updated_at": now}},
        )

    async def awaiting_wallet(
        self, unmoved_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Trade]:
        query = {
            "status": {"$in": [s.value for s in IN_FLIGHT]},
            "updated_at": {"$lt": unmoved_since},
        }
        page = oldest_first(self._trades, query, limit, after, field="updated_at")
        return [_trade(d) async for d in page]

    async def due(
        self, now: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Trade]:
        query = {
            "status": {"$in": [s.value for s in UNPAID]},
            "payment_deadline": {"$lte": now},
        }
        page = oldest_first(self._trades, query, limit, after, field="payment_deadline")
        return [_trade(d) async for d in page]

    async def mark_published(self, trade_id: str, command_id: str) -> None:
        await self._trades.update_one(
            {"_id": trade_id, "outbox.command_id": command_id},
            {"$set": {"outbox.$.published": True}},
        )

    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        return await unpublished(self._trades, older_than, limit, after)


async def ensure_indexes(database: AsyncDatabase[Document]) -> None:
    # a market's active offers, cheapest first, a page at a time (the offer list)
    await database[OFFERS].create_index(
        [
            ("status", ASCENDING),
            ("currency", ASCENDING),
            ("price", ASCENDING),
            ("created_at", ASCENDING),
            ("_id", ASCENDING),
        ]
    )
    # a user's trades as buyer and as seller, newest first, a page at a time (the trade list)
    for party in ("buyer_id", "seller_id"):
        await database[TRADES].create_index(
            [(party, ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]
        )
    # unpaid trades past their deadline, the earliest first, a page at a time (the sweeper)
    await database[TRADES].create_index(
        [("status", ASCENDING), ("payment_deadline", ASCENDING), ("_id", ASCENDING)]
    )
    # trades in flight unmoved the longest first, a page at a time (the ask-again pass)
    await database[TRADES].create_index(
        [("status", ASCENDING), ("updated_at", ASCENDING), ("_id", ASCENDING)]
    )
    # trades with a command not published, oldest first, a page at a time (the outbox relay)
    await database[TRADES].create_index(
        [("outbox.published", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
    )
    await MongoIdempotencyStore(database).ensure_indexes()
    # Earlier versions' indexes that the paged ones above replaced (each a prefix of its successor).
    await drop_replaced_indexes(database[OFFERS], ["status_1_currency_1"])
    await drop_replaced_indexes(
        database[TRADES],
        [
            "status_1_payment_deadline_1",
            "status_1_updated_at_1",
            "outbox.published_1",
            "buyer_id_1_created_at_-1",
            "seller_id_1_created_at_-1",
        ],
    )
