"""MongoDB repositories: single-document atomic writes only (inserts on unique keys, conditional
updates). Amounts are Decimal128; every datetime is UTC."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import structlog
from bson import Decimal128
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ipn_gateway.application.paging import decode_cursor, encode_cursor
from ipn_gateway.application.records import (
    CreatedPayment,
    DepositOrder,
    IpnRecord,
    OutboxEntry,
    Payment,
    ReviewItem,
    ReviewNote,
    ReviewStatus,
    Withdrawal,
    WithdrawalPage,
)
from ipn_gateway.domain.errors import Conflict
from ipn_gateway.domain.payments import PaymentState, PaymentStatus
from ipn_gateway.domain.withdrawals import (
    COUNTED_AGAINST_LIMIT,
    OPEN_STATUSES,
    Decision,
    WithdrawalStatus,
    attempt_of,
    outcome_of,
)
from shared.http.idempotency import MongoIdempotencyStore
from shared.messaging import CommandResult, WalletCommand
from shared.messaging.outcomes import UNRECORDED_REFUSAL
from shared.money import add
from shared.mongo import decimal_of as _decimal
from shared.mongo import drop_replaced_indexes, oldest_first, unpublished
from shared.mongo import utc as _utc
from shared.outbox import Unpublished
from shared.paging import Position

type Document = dict[str, Any]

log = structlog.get_logger(__name__)

ORDERS: Final = "nowpayments_deposit_orders"
PAYMENTS: Final = "nowpayments_payments"
IPNS: Final = "nowpayments_ipns"
REVIEWS: Final = "nowpayments_reviews"
DEAD_LETTERS: Final = "ipn_gateway_dead_letters"
WITHDRAWALS: Final = "withdrawals"
WITHDRAWAL_GUARDS: Final = "withdrawal_request_guards"
# Long enough for one request's reads and insert; a crashed request frees the user after it.
GUARD_LEASE: Final = timedelta(seconds=10)
# The `attempt` of a withdrawal stored before the field existed (see `_attempt`).
_UNDECIDED_WITHOUT_ATTEMPT: Final = 0
_DECIDED_WITHOUT_ATTEMPT: Final = 1


def _outbox_document(entry: OutboxEntry) -> Document:
    command = entry.as_stored()
    return {
        "command_id": entry.command_id,
        "reference_id": command.get("reference_id"),
        "command": command,
        "published": entry.published,
        "created_at": entry.created_at,
        "result": None,
    }


def _outbox(documents: list[Document]) -> tuple[OutboxEntry, ...]:
    """An owner's outbox as read: a command the command model refuses (an earlier version's) is
    kept as stored, so the owner is read all the same and the places that send it report it."""
    return tuple(
        OutboxEntry.read(
            d["command"],
            created_at=_utc(d["created_at"]),
            published=d["published"],
            result_status=(d.get("result") or {}).get("status"),
            result_reason=(d.get("result") or {}).get("reason"),
        )
        for d in documents
    )


async def _mark_published(
    collection: AsyncCollection[Document], owner_id: str, command_id: str
) -> None:
    await collection.update_one(
        {"_id": owner_id, "outbox.command_id": command_id},
        {"$set": {"outbox.$.published": True}},
    )


class MongoDepositOrders:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._orders = database[ORDERS]

    async def add(self, order: DepositOrder) -> None:
        document = asdict(order)
        document["_id"] = order.order_id
        await self._orders.insert_one(document)

    async def attach_payment(self, order_id: str, payment: CreatedPayment) -> None:
        await self._orders.update_one({"_id": order_id}, {"$set": {"payment": asdict(payment)}})

    async def get(self, order_id: str) -> DepositOrder | None:
        document = await self._orders.find_one({"_id": order_id})
        if document is None:
            return None
        return _order(document)

    async def holding(self, payment_id: str) -> str | None:
        found = await self._orders.find_one({"payment.payment_id": payment_id}, {"_id": 1})
        return str(found["_id"]) if found else None

    async def open_older_than(
        self,
        created_before: datetime,
        polled_before: datetime,
        limit: int,
        after: Position | None = None,
    ) -> Sequence[DepositOrder]:
        query = {
            "payment": {"$ne": None},
            "closed": {"$ne": True},
            "created_at": {"$lt": created_before},
            "$or": [{"polled_at": None}, {"polled_at": {"$lt": polled_before}}],
        }
        return [_order(d) async for d in oldest_first(self._orders, query, limit, after)]

    async def mark_polled(self, order_id: str, now: datetime, *, closed: bool) -> None:
        changes: Document = {"polled_at": now}
        if closed:
            changes["closed"] = True
        await self._orders.update_one({"_id": order_id}, {"$set": changes})


def _order(document: Document) -> DepositOrder:
    payment = document.get("payment")
    polled_at = document.get("polled_at")
    return DepositOrder(
        order_id=document["order_id"],
        user_id=document["user_id"],
        pay_currency=document["pay_currency"],
        price_amount=document["price_amount"],
        price_currency=document["price_currency"],
        created_at=_utc(document["created_at"]),
        payment=CreatedPayment(**payment) if payment else None,
        polled_at=_utc(polled_at) if polled_at else None,
        closed=bool(document.get("closed", False)),
    )


def _payment(document: Document) -> Payment:
    state = PaymentState(
        payment_id=document["_id"],
        status=PaymentStatus(document["status"]) if document.get("status") else None,
        seen=frozenset(document["seen"]),
        credited=_decimal(document["credited"]),
        credit_currency=document.get("credit_currency"),
        credits=document["credits"],
        approved_reviews=frozenset(document.get("approved_reviews", [])),
    )
    reviews = tuple(
        ReviewNote(r["code"], r["detail"], _utc(r["at"])) for r in document.get("reviews", [])
    )
    created_at, polled_at = document.get("created_at"), document.get("polled_at")
    asked_at = document.get("asked_at")
    return Payment(
        state=state,
        order_id=document["order_id"],
        user_id=document["user_id"],
        version=document["version"],
        outbox=_outbox(document.get("outbox", [])),
        reviews=reviews,
        parent_payment_id=document.get("parent_payment_id"),
        created_at=_utc(created_at) if created_at else None,
        polled_at=_utc(polled_at) if polled_at else None,
        poll_closed=bool(document.get("poll_closed", False)),
        asked_at=_utc(asked_at) if asked_at else None,
    )


class MongoPayments:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._payments = database[PAYMENTS]

    async def get(self, payment_id: str) -> Payment | None:
        document = await self._payments.find_one({"_id": payment_id})
        return _payment(document) if document else None

    async def save(
        self,
        state: PaymentState,
        *,
        order_id: str,
        user_id: str,
        expected_version: int | None,
        credit: OutboxEntry | None,
        review: ReviewNote | None,
        now: datetime,
        parent_payment_id: str | None = None,
    ) -> bool:
        fields: Document = {
            "status": state.status.value if state.status else None,
            "seen": sorted(state.seen),
            "credited": Decimal128(state.credited),
            "credit_currency": state.credit_currency,
            "credits": state.credits,
            "approved_reviews": sorted(state.approved_reviews),
            "updated_at": now,
        }
        if parent_payment_id is not None:
            fields["parent_payment_id"] = parent_payment_id
        new_entries = [_outbox_document(credit)] if credit else []
        new_reviews = [asdict(review)] if review else []
        if expected_version is None:
            document = {
                "_id": state.payment_id,
                "payment_id": state.payment_id,
                "order_id": order_id,
                "user_id": user_id,
                "version": 0,
                "created_at": now,
                "outbox": new_entries,
                "reviews": new_reviews,
                "parent_payment_id": None,
                "polled_at": None,
                "poll_closed": False,
                **fields,
            }
            try:
                await self._payments.insert_one(document)
            except DuplicateKeyError:
                return False
            return True
        # $push, not a replacement: published flags and results set meanwhile must survive.
        updated = await self._payments.update_one(
            {"_id": state.payment_id, "version": expected_version},
            {
                "$set": {**fields, "version": expected_version + 1},
                "$push": {"outbox": {"$each": new_entries}, "reviews": {"$each": new_reviews}},
            },
        )
        return updated.matched_count == 1

    async def open_repeats_older_than(
        self,
        created_before: datetime,
        polled_before: datetime,
        limit: int,
        after: Position | None = None,
    ) -> Sequence[Payment]:
        query = {
            "parent_payment_id": {"$ne": None},
            "poll_closed": {"$ne": True},
            "created_at": {"$lt": created_before},
            "$or": [{"polled_at": None}, {"polled_at": {"$lt": polled_before}}],
        }
        return [_payment(d) async for d in oldest_first(self._payments, query, limit, after)]

    async def mark_polled(self, payment_id: str, now: datetime, *, closed: bool) -> None:
        changes: Document = {"polled_at": now}
        if closed:
            changes["poll_closed"] = True
        await self._payments.update_one({"_id": payment_id}, {"$set": changes})

    async def mark_published(self, payment_id: str, command_id: str) -> None:
        await _mark_published(self._payments, payment_id, command_id)

    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        return await unpublished(self._payments, older_than, limit, after)

    async def awaiting_wallet(
        self, unanswered_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Payment]:
        query: Document = {
            "outbox": {
                "$elemMatch": {
                    "result": None,
                    "published": True,
                    "created_at": {"$lt": unanswered_since},
                }
            },
            "$or": [{"asked_at": None}, {"asked_at": {"$lt": unanswered_since}}],
        }
        return [_payment(d) async for d in oldest_first(self._payments, query, limit, after)]

    async def mark_asked(self, payment_id: str, now: datetime) -> None:
        await self._payments.update_one({"_id": payment_id}, {"$set": {"asked_at": now}})

    async def record_result(self, result: CommandResult) -> None:
        """Keep the wallet's first final answer beside the credit it answers
        (`CommandResult.answers`: its command id, type and user), a resend's `duplicate` as the
        outcome it repeats; a refused credit is flagged for review. A later answer (a
        redelivery, another resend's duplicate) changes nothing, and an answer that is not final
        (`CommandResult.final`) is none: the credit is asked about again."""
        if not result.final:
            return
        status = outcome_of(result.status, result.reason, result.original_status)
        update: Document = {
            "$set": {
                "outbox.$.result": {
                    "status": status,
                    "reason": result.reason,
                    "at": result.processed_at,
                }
            }
        }
        if status == "rejected":
            note = {
                "code": "credit_rejected",
                "detail": f"{result.reference_id}: {result.reason}",
                "at": result.processed_at,
            }
            update["$push"] = {"reviews": note}
        answered = {
            "command_id": result.command_id,
            "command.type": result.type,
            "command.user_id": result.user_id,
            "result": None,
        }
        await self._payments.update_one({"outbox": {"$elemMatch": answered}}, update)

    async def result_of(self, payment_id: str, reference_id: str) -> tuple[str, str | None] | None:
        document = await self._payments.find_one({"_id": payment_id}, {"outbox": 1})
        for entry in document.get("outbox", []) if document else []:
            answer = entry.get("result")
            if entry["reference_id"] == reference_id and answer:
                return answer["status"], answer.get("reason")
        return None


def _review(document: Document) -> ReviewItem:
    cumulative = document.get("cumulative")
    decided_at = document.get("decided_at")
    return ReviewItem(
        review_id=document["_id"],
        reason=document["reason"],
        detail=document["detail"],
        order_id=document["order_id"],
        payment_id=document["payment_id"],
        payment_status=document["payment_status"],
        user_id=document.get("user_id"),
        bound=document["bound"],
        currency=document.get("currency"),
        cumulative=_decimal(cumulative) if cumulative is not None else None,
        created_at=_utc(document["created_at"]),
        status=document["status"],
        decided_by=document.get("decided_by"),
        decided_at=_utc(decided_at) if decided_at else None,
        note=document.get("note"),
        outbox=_outbox(document.get("outbox", [])),
    )


class MongoReviews:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._reviews = database[REVIEWS]

    async def add(self, item: ReviewItem) -> bool:
        document = {
            "_id": item.review_id,
            "reason": item.reason,
            "detail": item.detail,
            "order_id": item.order_id,
            "payment_id": item.payment_id,
            "payment_status": item.payment_status,
            "user_id": item.user_id,
            "bound": item.bound,
            "currency": item.currency,
            "cumulative": Decimal128(item.cumulative) if item.cumulative is not None else None,
            "created_at": item.created_at,
            "status": item.status,
            "decided_by": None,
            "decided_at": None,
            "note": None,
            "outbox": [_outbox_document(e) for e in item.outbox],
        }
        try:
            await self._reviews.insert_one(document)
        except DuplicateKeyError:
            return False
        return True

    async def payment_statuses(self, payment_id: str) -> set[str]:
        found = self._reviews.find({"payment_id": payment_id}, projection=["payment_status"])
        return {str(document["payment_status"]) async for document in found}

    async def get(self, review_id: str) -> ReviewItem | None:
        document = await self._reviews.find_one({"_id": review_id})
        return _review(document) if document else None

    async def list(self, status: ReviewStatus | None, limit: int) -> Sequence[ReviewItem]:
        query = {} if status is None else {"status": status}
        cursor = self._reviews.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        return [_review(d) async for d in cursor.limit(limit)]

    async def close(
        self,
        review_id: str,
        status: ReviewStatus,
        admin_id: str,
        note: str | None,
        now: datetime,
    ) -> ReviewItem | None:
        changes = {"status": status, "decided_by": admin_id, "decided_at": now, "note": note}
        return await self._move(review_id, "open", changes)

    async def claim(self, review_id: str, admin_id: str, now: datetime) -> ReviewItem | None:
        changes = {"status": "approving", "decided_by": admin_id, "decided_at": now}
        return await self._move(review_id, "open", changes)

    async def finish(self, review_id: str) -> ReviewItem | None:
        return await self._move(review_id, "approving", {"status": "approved"})

    async def release(self, review_id: str) -> ReviewItem | None:
        changes = {"status": "open", "decided_by": None, "decided_at": None}
        return await self._move(review_id, "approving", changes)

    async def _move(
        self, review_id: str, from_status: ReviewStatus, changes: Document
    ) -> ReviewItem | None:
        document = await self._reviews.find_one_and_update(
            {"_id": review_id, "status": from_status},
            {"$set": changes},
            return_document=ReturnDocument.AFTER,
        )
        return _review(document) if document else None

    async def mark_published(self, review_id: str, command_id: str) -> None:
        await _mark_published(self._reviews, review_id, command_id)

    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        return await unpublished(self._reviews, older_than, limit, after)


class MongoIpnLog:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._ipns = database[IPNS]

    async def record(self, entry: IpnRecord) -> None:
        document = asdict(entry)
        document["headers"] = dict(entry.headers)
        await self._ipns.insert_one(document)

    async def find(self, query: Document | None = None) -> list[Document]:
        return await self._ipns.find(query or {}).sort("received_at", ASCENDING).to_list()


def _attempt(document: Document) -> int:
    """A withdrawal's `attempt`. One stored before the field existed has none: that version sent
    at most one decision (its reference `withdrawal:<id>`, attempt 1) and never reopened one the
    wallet refused, so undecided it is at attempt 0 and decided at attempt 1."""
    attempt = document.get("attempt")
    if attempt is None:
        undecided = document.get("decision") is None
        return _UNDECIDED_WITHOUT_ATTEMPT if undecided else _DECIDED_WITHOUT_ATTEMPT
    return int(attempt)


def _attempt_is(attempt: int, without_attempt: int) -> object:
    """A filter on `attempt` that also takes a document without one when it reads as `attempt`
    (`without_attempt`: what such a document reads as in the filter's decision state)."""
    return {"$in": [attempt, None]} if attempt == without_attempt else attempt


def _withdrawal(document: Document) -> Withdrawal:
    asked_at = document.get("asked_at")
    return Withdrawal(
        withdrawal_id=document["_id"],
        user_id=document["user_id"],
        currency=document["currency"],
        amount=_decimal(document["amount"]),
        fee=_decimal(document["fee"]),
        address=document["address"],
        status=WithdrawalStatus(document["status"]),
        created_at=_utc(document["created_at"]),
        updated_at=_utc(document["updated_at"]),
        reason=document.get("reason"),
        decision=document.get("decision"),
        decided_by=document.get("decided_by"),
        attempt=_attempt(document),
        outbox=_outbox(document.get("outbox", [])),
        asked_at=_utc(asked_at) if asked_at else None,
    )


class MongoWithdrawals:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._withdrawals = database[WITHDRAWALS]
        self._guards = database[WITHDRAWAL_GUARDS]

    async def insert(self, withdrawal: Withdrawal) -> Withdrawal | None:
        try:
            await self._insert(withdrawal)
        except DuplicateKeyError:
            return await self.get(withdrawal.withdrawal_id)
        return None

    async def _insert(self, withdrawal: Withdrawal) -> None:
        await self._withdrawals.insert_one(
            {
                "_id": withdrawal.withdrawal_id,
                "withdrawal_id": withdrawal.withdrawal_id,
                "user_id": withdrawal.user_id,
                "currency": withdrawal.currency,
                "amount": Decimal128(withdrawal.amount),
                "fee": Decimal128(withdrawal.fee),
                "address": withdrawal.address,
                "status": withdrawal.status.value,
                "reason": withdrawal.reason,
                "decision": withdrawal.decision,
                "decided_by": withdrawal.decided_by,
                "attempt": withdrawal.attempt,
                "created_at": withdrawal.created_at,
                "updated_at": withdrawal.updated_at,
                "outbox": [_outbox_document(e) for e in withdrawal.outbox],
                "asked_at": withdrawal.asked_at,
            }
        )

    async def get(self, withdrawal_id: str) -> Withdrawal | None:
        document = await self._withdrawals.find_one({"_id": withdrawal_id})
        return _withdrawal(document) if document else None

    async def page(
        self,
        user_id: str | None,
        status: WithdrawalStatus | None,
        limit: int,
        cursor: str | None,
    ) -> WithdrawalPage:
        query: Document = {}
        if user_id is not None:
            query["user_id"] = user_id
        if status is not None:
            query["status"] = status.value
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            query["$or"] = [
                {"created_at": {"$lt": created_at}},
                {"created_at": created_at, "_id": {"$lt": last_id}},
            ]
        found = self._withdrawals.find(query).sort(
            [("created_at", DESCENDING), ("_id", DESCENDING)]
        )
        documents = await found.limit(limit + 1).to_list()
        items = tuple(_withdrawal(d) for d in documents[:limit])
        last = items[-1] if items else None
        more = len(documents) > limit
        next_cursor = encode_cursor(last.created_at, last.withdrawal_id) if more and last else None
        return WithdrawalPage(items, next_cursor)

    async def decide(
        self,
        withdrawal_id: str,
        decision: Decision,
        admin_id: str,
        reason: str | None,
        command: WalletCommand,
        now: datetime,
    ) -> Withdrawal | None:
        # A new decision replaces an earlier one's reason (a refusal it was reopened with).
        changes: Document = {
            "decision": decision,
            "decided_by": admin_id,
            "decided_at": now,
            "reason": reason,
        }
        document = await self._withdrawals.find_one_and_update(
            {
                "_id": withdrawal_id,
                "status": WithdrawalStatus.LOCKED.value,
                "decision": None,
                # The command was made for this attempt: a decision read before a reopen is stale.
                # Undecided and without `attempt` (stored before it existed): attempt 0, and the
                # increment below writes 1.
                "attempt": _attempt_is(
                    attempt_of(command.reference_id) - 1, _UNDECIDED_WITHOUT_ATTEMPT
                ),
            },
            {
                "$set": {**changes, "updated_at": now},
                "$inc": {"attempt": 1},
                "$push": {"outbox": _outbox_document(OutboxEntry(command, created_at=now))},
            },
            return_document=ReturnDocument.AFTER,
        )
        return _withdrawal(document) if document else None

    async def reopen(
        self, withdrawal_id: str, reference_id: str, reason: str, now: datetime
    ) -> Withdrawal | None:
        attempt = attempt_of(reference_id)
        document = await self._withdrawals.find_one_and_update(
            {
                "_id": withdrawal_id,
                "status": WithdrawalStatus.LOCKED.value,
                "decision": {"$ne": None},
                # Decided and without `attempt` (stored before it existed): attempt 1.
                "attempt": _attempt_is(attempt, _DECIDED_WITHOUT_ATTEMPT),
            },
            {
                "$set": {
                    "decision": None,
                    "decided_by": None,
                    "reason": reason,
                    "updated_at": now,
                    # Written for one that had none, so the next decision is the next attempt
                    # (read as 0 again, it would reuse the refused decision's reference).
                    "attempt": attempt,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return _withdrawal(document) if document else None

    async def transition(
        self,
        withdrawal_id: str,
        from_status: WithdrawalStatus,
        to_status: WithdrawalStatus,
        reason: str | None,
        now: datetime,
    ) -> Withdrawal | None:
        changes: Document = {"status": to_status.value, "updated_at": now}
        if reason is not None:
            changes["reason"] = reason
        document = await self._withdrawals.find_one_and_update(
            {"_id": withdrawal_id, "status": from_status.value},
            {"$set": changes},
            return_document=ReturnDocument.AFTER,
        )
        return _withdrawal(document) if document else None

    async def mark_published(self, withdrawal_id: str, command_id: str) -> None:
        await _mark_published(self._withdrawals, withdrawal_id, command_id)

    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        return await unpublished(self._withdrawals, older_than, limit, after)

    async def awaiting_wallet(
        self, unmoved_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Withdrawal]:
        query: Document = {
            "$and": [
                # `awaits_wallet`: pending, or locked with a decision.
                {
                    "$or": [
                        {"status": WithdrawalStatus.PENDING.value},
                        {"status": WithdrawalStatus.LOCKED.value, "decision": {"$ne": None}},
                    ]
                },
                {"$or": [{"asked_at": None}, {"asked_at": {"$lt": unmoved_since}}]},
            ],
            "updated_at": {"$lt": unmoved_since},
            # The outbox's last entry is published.
            "$expr": {"$eq": [{"$arrayElemAt": ["$outbox.published", -1]}, True]},
        }
        page = oldest_first(self._withdrawals, query, limit, after, field="updated_at")
        return [_withdrawal(d) async for d in page]

    async def mark_asked(self, withdrawal_id: str, now: datetime) -> None:
        await self._withdrawals.update_one({"_id": withdrawal_id}, {"$set": {"asked_at": now}})

    async def open_count(self, user_id: str) -> int:
        return await self._withdrawals.count_documents(
            {"user_id": user_id, "status": {"$in": [s.value for s in OPEN_STATUSES]}}
        )

    async def total_since(self, user_id: str, currency: str, since: datetime) -> Decimal:
        total = Decimal(0)
        query = {
            "user_id": user_id,
            "currency": currency,
            "created_at": {"$gte": since},
            "status": {"$in": [s.value for s in COUNTED_AGAINST_LIMIT]},
        }
        async for document in self._withdrawals.find(query, {"amount": 1, "fee": 1}):
            total = add(total, add(_decimal(document["amount"]), _decimal(document["fee"])))
        return total

    @asynccontextmanager
    async def user_guard(self, user_id: str, now: datetime) -> AsyncIterator[None]:
        token = secrets.token_hex(8)
        try:
            # Matches only an expired lease; a live one makes the upsert collide on _id.
            await self._guards.find_one_and_update(
                {"_id": user_id, "until": {"$lt": now}},
                {"$set": {"until": now + GUARD_LEASE, "token": token}},
                upsert=True,
            )
        except DuplicateKeyError:
            raise Conflict(
                "withdrawal_in_progress", "another withdrawal request of yours is in progress"
            ) from None
        try:
            yield
        finally:
            await self._guards.update_one(
                {"_id": user_id, "token": token},
                {"$set": {"until": datetime(1970, 1, 1, tzinfo=UTC)}},
            )


async def reopen_unrecorded_refusals(database: AsyncDatabase[Document]) -> int:
    """Earlier versions recorded a `rejected / processing_failed` answer to a deposit's credit
    as its outcome, though the wallet recorded none: the credit may still apply, and nothing
    sent it again. Such answers are cleared (their `credit_rejected` note stays, as what
    happened), so the ask-again pass sends those credits again. Idempotent; how many payments
    it reopened."""
    unrecorded = {"status": "rejected", "reason": UNRECORDED_REFUSAL}
    found = {f"result.{field}": value for field, value in unrecorded.items()}
    updated = await database[PAYMENTS].update_many(
        {"outbox": {"$elemMatch": found}},
        {"$set": {"outbox.$[refused].result": None}},
        array_filters=[{f"refused.{key}": value for key, value in found.items()}],
    )
    if updated.modified_count:
        log.warning("payments.unrecorded_refusals_reopened", payments=updated.modified_count)
    return updated.modified_count


async def ensure_indexes(database: AsyncDatabase[Document]) -> None:
    await database[ORDERS].create_index([("user_id", ASCENDING), ("created_at", DESCENDING)])
    await database[PAYMENTS].create_index([("order_id", ASCENDING)])
    # unpublished commands, oldest first, a page at a time (the outbox relay)
    await database[PAYMENTS].create_index(
        [("outbox.published", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
    )
    # credits the wallet has not answered, oldest payment first, a page at a time (ask-again):
    # an answered credit's `result` is a document, so the pass reads only the unanswered ones.
    await database[PAYMENTS].create_index(
        [
            ("outbox.result", ASCENDING),
            ("outbox.published", ASCENDING),
            ("created_at", ASCENDING),
            ("_id", ASCENDING),
        ]
    )
    await database[IPNS].create_index([("payment_id", ASCENDING), ("payment_status", ASCENDING)])
    await database[IPNS].create_index([("received_at", DESCENDING)])
    await database[WITHDRAWALS].create_index([("user_id", ASCENDING), ("created_at", DESCENDING)])
    # unpublished commands, oldest first, a page at a time (the outbox relay)
    await database[WITHDRAWALS].create_index(
        [("outbox.published", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
    )
    await database[WITHDRAWALS].create_index([("status", ASCENDING), ("created_at", DESCENDING)])
    # withdrawals waiting on the wallet unmoved the longest first, a page at a time (ask-again)
    await database[WITHDRAWALS].create_index(
        [("status", ASCENDING), ("updated_at", ASCENDING), ("_id", ASCENDING)]
    )
    # open orders oldest first, a page at a time (the missed-IPN poller)
    await database[ORDERS].create_index(
        [("closed", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
    )
    await database[ORDERS].create_index([("payment.payment_id", ASCENDING)])
    await database[PAYMENTS].create_index([("outbox.command_id", ASCENDING)])
    # The poller's due repeat payments: those with a parent, their polling not closed, oldest first.
    await database[PAYMENTS].create_index(
        [
            ("parent_payment_id", ASCENDING),
            ("poll_closed", ASCENDING),
            ("created_at", ASCENDING),
            ("_id", ASCENDING),
        ]
    )
    await database[REVIEWS].create_index([("status", ASCENDING), ("created_at", DESCENDING)])
    await database[REVIEWS].create_index([("payment_id", ASCENDING)])  # a payment's items
    # unpublished commands, oldest first, a page at a time (the outbox relay)
    await database[REVIEWS].create_index(
        [("outbox.published", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
    )
    await MongoIdempotencyStore(database).ensure_indexes()
    await reopen_unrecorded_refusals(database)
    # Earlier versions' indexes that the paged ones above replaced (each a prefix of its successor).
    await drop_replaced_indexes(database[ORDERS], ["closed_1_created_at_1"])
    await drop_replaced_indexes(
        database[PAYMENTS],
        ["outbox.published_1", "parent_payment_id_1_poll_closed_1_created_at_1"],
    )
    await drop_replaced_indexes(
        database[WITHDRAWALS], ["outbox.published_1", "status_1_updated_at_1"]
    )
    await drop_replaced_indexes(database[REVIEWS], ["outbox.published_1"])
