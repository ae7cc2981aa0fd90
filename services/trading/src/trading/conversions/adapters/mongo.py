"""Quotes (`conversion_quotes`: a quote and, once executed, its swap or order) and liquidity
fundings (`liquidity_fundings`), each a single document changed by conditional updates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bson import Decimal128
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.money import format_amount
from shared.paging import Position
from shared.prices import FUTURE_TOLERANCE
from trading.conversions.application import Funding, QuoteExists
from trading.conversions.domain import ConversionKind, Quote, Status, Terms
from trading.mongo_values import oldest_first
from trading.prices.domain import Price

Document = dict[str, Any]


def _price_doc(price: Price) -> Document:
    # Prices and rates are stored as decimal strings: exact at any number of digits.
    return {
        "currency": price.currency,
        "price": format_amount(price.price),
        "as_of": price.as_of,
        "source": price.source,
    }


def _price(doc: Document) -> Price:
    return Price(doc["currency"], Decimal(doc["price"]), doc["as_of"], doc["source"])


def quote_document(quote: Quote) -> Document:
    return {
        "_id": quote.quote_id,
        "kind": quote.kind.value,
        "user_id": quote.user_id,
        "pay_currency": quote.pay_currency,
        "pay_amount": Decimal128(quote.pay_amount),
        "fee": Decimal128(quote.fee),
        "rate": format_amount(quote.rate),
        "receive_currency": quote.receive_currency,
        "receive_amount": Decimal128(quote.receive_amount),
        "prices": {"pay": _price_doc(quote.pay_price), "receive": _price_doc(quote.receive_price)},
        "fee_rate": format_amount(quote.terms.fee_rate),
        "spread": format_amount(quote.terms.spread),
        "ttl_seconds": quote.terms.ttl.total_seconds(),
        "created_at": quote.created_at,
        "expires_at": quote.expires_at,
        "status": quote.status.value,
        "execution_id": quote.execution_id,
        "executed_at": quote.executed_at,
        "published_at": None,
        "reason": quote.reason,
        "updated_at": quote.created_at,
    }


def quote_from(doc: Document) -> Quote:
    return Quote(
        quote_id=doc["_id"],
        kind=ConversionKind(doc["kind"]),
        user_id=doc["user_id"],
        pay_currency=doc["pay_currency"],
        pay_amount=doc["pay_amount"].to_decimal(),
        fee=doc["fee"].to_decimal(),
        rate=Decimal(doc["rate"]),
        receive_currency=doc["receive_currency"],
        receive_amount=doc["receive_amount"].to_decimal(),
        pay_price=_price(doc["prices"]["pay"]),
        receive_price=_price(doc["prices"]["receive"]),
        terms=Terms(
            fee_rate=Decimal(doc["fee_rate"]),
            spread=Decimal(doc["spread"]),
            ttl=timedelta(seconds=doc["ttl_seconds"]),
        ),
        created_at=doc["created_at"],
        expires_at=doc["expires_at"],
        status=Status(doc["status"]),
        execution_id=doc.get("execution_id"),
        executed_at=doc.get("executed_at"),
        reason=doc.get("reason"),
    )


def _sent_before(instant: datetime) -> dict[str, Any]:
    """Last sent before `instant`: asked again then (`asked_at`), or, for a record an earlier
    version published without `asked_at`, published then (it was never asked again)."""
    return {
        "$or": [
            {"asked_at": {"$lt": instant}},
            {"asked_at": None, "published_at": {"$ne": None, "$lt": instant}},
        ]
    }


class MongoQuotes:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._quotes: AsyncCollection[Document] = database["conversion_quotes"]

    async def ensure_indexes(self) -> None:
        await self._quotes.create_index([("execution_id", ASCENDING)])
        await self._quotes.create_index([("status", ASCENDING), ("asked_at", ASCENDING)])
        # pending quotes oldest first, a page at a time (the relays)
        await self._quotes.create_index(
            [("status", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
        )

    async def add(self, quote: Quote) -> None:
        try:
            await self._quotes.insert_one(quote_document(quote))
        except DuplicateKeyError:
            raise QuoteExists(quote.quote_id) from None

    async def get(self, quote_id: str) -> Quote | None:
        doc = await self._quotes.find_one({"_id": quote_id})
        return quote_from(doc) if doc else None

    async def by_execution(self, kind: ConversionKind, execution_id: str) -> Quote | None:
        doc = await self._quotes.find_one({"execution_id": execution_id, "kind": kind.value})
        return quote_from(doc) if doc else None

    async def claim(
        self, quote_id: str, kind: ConversionKind, user_id: str, execution_id: str, now: datetime
    ) -> Quote | None:
        doc = await self._quotes.find_one_and_update(
            {
                "_id": quote_id,
                "kind": kind.value,
                "user_id": user_id,
                "status": Status.QUOTED.value,
                "expires_at": {"$gt": now},
                # not made further ahead of this clock than hosts differ (Quote.expired)
                "created_at": {"$lte": now + FUTURE_TOLERANCE},
            },
            {
                "$set": {
                    "status": Status.PENDING.value,
                    "execution_id": execution_id,
                    "executed_at": now,
                    "updated_at": now,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return quote_from(doc) if doc else None

    async def mark_published(self, quote_id: str, at: datetime) -> None:
        await self._quotes.update_one(
            {"_id": quote_id, "published_at": None},
            {"$set": {"published_at": at, "asked_at": at}},
        )

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Quote]:
        query = {"status": Status.PENDING.value, **_sent_before(asked_before)}
        return [quote_from(doc) async for doc in oldest_first(self._quotes, query, limit, after)]

    async def mark_asked(self, quote_id: str, at: datetime) -> None:
        await self._quotes.update_one({"_id": quote_id}, {"$set": {"asked_at": at}})

    async def unpublished(
        self, older_than: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Quote]:
        query = {
            "status": Status.PENDING.value,
            "published_at": None,
            "executed_at": {"$lt": older_than},
        }
        return [quote_from(doc) async for doc in oldest_first(self._quotes, query, limit, after)]

    async def settle(
        self,
        kind: ConversionKind,
        execution_id: str,
        user_id: str,
        status: Status,
        reason: str | None,
        at: datetime,
    ) -> bool:
        updated = await self._quotes.update_one(
            {
                "execution_id": execution_id,
                "kind": kind.value,
                "user_id": user_id,
                "status": Status.PENDING.value,
            },
            {"$set": {"status": status.value, "reason": reason, "updated_at": at}},
        )
        return updated.modified_count == 1


def _funding(doc: Document) -> Funding:
    return Funding(
        reference_id=doc["_id"],
        currency=doc["currency"],
        amount=doc["amount"].to_decimal(),
        admin_id=doc["admin_id"],
        status=Status(doc["status"]),
        reason=doc.get("reason"),
        created_at=doc["created_at"],
    )


class MongoFundings:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._fundings: AsyncCollection[Document] = database["liquidity_fundings"]

    async def ensure_indexes(self) -> None:
        # pending fundings oldest first, a page at a time (the relays)
        await self._fundings.create_index(
            [("status", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
        )
        await self._fundings.create_index([("status", ASCENDING), ("asked_at", ASCENDING)])

    async def add(self, funding: Funding) -> Funding | None:
        try:
            await self._fundings.insert_one(
                {
                    "_id": funding.reference_id,
                    "currency": funding.currency,
                    "amount": Decimal128(funding.amount),
                    "admin_id": funding.admin_id,
                    "status": funding.status.value,
                    "reason": funding.reason,
                    "created_at": funding.created_at,
                    "updated_at": funding.created_at,
                    "published_at": None,
                }
            )
        except DuplicateKeyError:
            return None
        return funding

    async def get(self, reference_id: str) -> Funding | None:
        doc = await self._fundings.find_one({"_id": reference_id})
        return _funding(doc) if doc else None

    async def settle(
        self, reference_id: str, admin_id: str, status: Status, reason: str | None, at: datetime
    ) -> bool:
        updated = await self._fundings.update_one(
            {"_id": reference_id, "admin_id": admin_id, "status": Status.PENDING.value},
            {"$set": {"status": status.value, "reason": reason, "updated_at": at}},
        )
        return updated.modified_count == 1

    async def mark_published(self, reference_id: str, at: datetime) -> None:
        # A funding stored before fundings were relayed has no published_at: None matches it too.
        await self._fundings.update_one(
            {"_id": reference_id, "published_at": None},
            {"$set": {"published_at": at, "asked_at": at}},
        )

    async def unpublished(
        self, older_than: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Funding]:
        query = {
            "status": Status.PENDING.value,
            "published_at": None,
            "created_at": {"$lt": older_than},
        }
        return [_funding(doc) async for doc in oldest_first(self._fundings, query, limit, after)]

    async def awaiting_wallet(
        self, asked_before: datetime, limit: int = 100, after: Position | None = None
    ) -> Sequence[Funding]:
        query = {"status": Status.PENDING.value, **_sent_before(asked_before)}
        return [_funding(doc) async for doc in oldest_first(self._fundings, query, limit, after)]

    async def mark_asked(self, reference_id: str, at: datetime) -> None:
        await self._fundings.update_one({"_id": reference_id}, {"$set": {"asked_at": at}})
