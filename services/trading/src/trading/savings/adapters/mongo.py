"""MongoDB storage of savings: single-document atomic writes (inserts on unique keys, conditional
updates), amounts as Decimal128, datetimes in UTC."""

from __future__ import annotations

from contextlib import suppress
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from bson import Decimal128
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.messaging import LedgerTransaction
from shared.money import add
from shared.mongo import drop_replaced_indexes
from shared.paging import Position
from trading.mongo_values import decimal_of, oldest_first, utc
from trading.payouts import PayoutRecords
from trading.savings.domain.accrual import (
    INTEREST_TRANSACTION_TYPE,
    AccrualDue,
    SavingsMovement,
    savings_movements,
)
from trading.savings.domain.transfers import TransferStatus

type Document = dict[str, Any]

TRANSFERS: Final = "savings_transfers"
MOVEMENTS: Final = "savings_movements"
ACCRUALS: Final = "savings_accruals"
ACCRUAL_RUNS: Final = "savings_accrual_runs"
ZERO: Final = Decimal(0)


async def ensure_indexes(database: AsyncDatabase[Document]) -> None:
    await database[TRANSFERS].create_index([("user_id", ASCENDING), ("created_at", ASCENDING)])
    # pending transfers oldest first, a page at a time (the resend)
    await database[TRANSFERS].create_index(
        [("status", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
    )
    # An earlier version's index that the resend's replaced (a prefix of it).
    await drop_replaced_indexes(database[TRANSFERS], ["status_1_created_at_1"])
    await database[MOVEMENTS].create_index([("currency", ASCENDING), ("occurred_at", ASCENDING)])
    await database[MOVEMENTS].create_index([("user_id", ASCENDING)])
    # a day's interest records (a run of a day whose run completed)
    await database[ACCRUALS].create_index(
        [("currency", ASCENDING), ("date", ASCENDING), ("_id", ASCENDING)]
    )
    # a currency's newest completed run (where a restarted scheduler catches up from)
    await database[ACCRUAL_RUNS].create_index([("currency", ASCENDING), ("date", DESCENDING)])


class MongoTransfers:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._collection = database[TRANSFERS]

    async def insert(self, transfer: Document) -> bool:
        """Store a new transfer; False when its id exists (the same Idempotency-Key again)."""
        stored = dict(transfer)
        stored["_id"] = stored.pop("transfer_id")
        stored["amount"] = Decimal128(transfer["amount"])
        try:
            await self._collection.insert_one(stored)
        except DuplicateKeyError:
            return False
        return True

    async def get(self, transfer_id: str) -> Document | None:
        found = await self._collection.find_one({"_id": transfer_id})
        return _transfer(found) if found else None

    async def settle(
        self,
        transfer_id: str,
        status: TransferStatus,
        *,
        reason: str | None,
        transaction_id: str | None,
        at: datetime,
    ) -> Document | None:
        """pending → completed | failed, once: the filter expects the transfer still pending."""
        updated = await self._collection.find_one_and_update(
            {"_id": transfer_id, "status": TransferStatus.PENDING.value},
            {
                "$set": {
                    "status": status.value,
                    "reason": reason,
                    "transaction_id": transaction_id,
                    "updated_at": at,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return _transfer(updated) if updated else None

    async def pending_before(
        self, before: datetime, limit: int = 100, after: Position | None = None
    ) -> list[Document]:
        query = {
            "status": TransferStatus.PENDING.value,
            "created_at": {"$lt": before},
            "$or": [{"asked_at": None}, {"asked_at": {"$lt": before}}],
        }
        return [_transfer(d) async for d in oldest_first(self._collection, query, limit, after)]

    async def mark_asked(self, transfer_id: str, at: datetime) -> None:
        await self._collection.update_one(
            {"_id": transfer_id, "status": TransferStatus.PENDING.value},
            {"$set": {"asked_at": at}},
        )


def _transfer(document: Document) -> Document:
    transfer = dict(document)
    transfer["transfer_id"] = transfer.pop("_id")
    transfer["amount"] = decimal_of(document["amount"])
    for field in ("created_at", "updated_at"):
        transfer[field] = utc(document[field])
    return transfer


class MongoSavingsHistory:
    """Every change of every user's savings bucket, keyed by (transaction, user, currency).

    The ledger's event is the authority (its `occurred_at` is the wallet's commit time); a row
    recorded earlier from the wallet's result to the command we sent only fills the gap until the
    event arrives, and the event overwrites its time.
    """

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._collection = database[MOVEMENTS]

    async def record_transaction(self, transaction: LedgerTransaction) -> None:
        """What a ledger transaction did to savings accounts (a handler of wallet.events)."""
        for movement in savings_movements(transaction):
            await self.record_event(movement)

    async def record_event(self, movement: SavingsMovement) -> None:
        await self._collection.update_one(
            {"_id": movement.key},
            {"$set": _movement(movement) | {"source": "event"}},
            upsert=True,
        )

    async def record_result(self, movement: SavingsMovement) -> None:
        await self._collection.update_one(
            {"_id": movement.key},
            {"$setOnInsert": _movement(movement) | {"source": "result"}},
            upsert=True,
        )

    async def balances(self, currency: str, cutoff: datetime) -> dict[str, Decimal]:
        """Each user's savings balance of `currency` at `cutoff` (movements strictly before it)."""
        balances: dict[str, Decimal] = {}
        cursor = self._collection.find(
            {"currency": currency, "occurred_at": {"$lt": cutoff}},
            {"user_id": 1, "amount": 1},
        )
        async for row in cursor:
            user = row["user_id"]
            balances[user] = add(balances.get(user, ZERO), decimal_of(row["amount"]))
        return balances

    async def positions(self, user_id: str) -> list[tuple[str, Decimal, Decimal]]:
        """(currency, savings balance, interest earned) of every currency the user ever saved."""
        totals: dict[str, tuple[Decimal, Decimal]] = {}
        async for row in self._collection.find({"user_id": user_id}):
            balance, interest = totals.get(row["currency"], (ZERO, ZERO))
            amount = decimal_of(row["amount"])
            balance = add(balance, amount)
            if row["transaction_type"] == INTEREST_TRANSACTION_TYPE:
                interest = add(interest, amount)
            totals[row["currency"]] = (balance, interest)
        return [(currency, *totals[currency]) for currency in sorted(totals)]


def _movement(movement: SavingsMovement) -> Document:
    return {
        "transaction_id": movement.transaction_id,
        "transaction_type": movement.transaction_type,
        "user_id": movement.user_id,
        "currency": movement.currency,
        "amount": Decimal128(movement.amount),
        "occurred_at": movement.occurred_at,
    }


class MongoAccruals(PayoutRecords):
    """One record per (currency, day, user): the amount sent under a key is decided once."""

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        super().__init__(database[ACCRUALS], decimal_fields=("balance", "apr", "amount"))
        self._runs = database[ACCRUAL_RUNS]

    async def claim(self, due: AccrualDue, at: datetime) -> Document:
        """The record for `due`'s key: new (status pending) or the one an earlier run stored."""
        fields = {
            "user_id": due.user_id,
            "currency": due.currency,
            "date": due.day.isoformat(),
            "balance": Decimal128(due.balance),
            "apr": Decimal128(due.apr),
            "amount": Decimal128(due.amount),
        }
        return await self._claim(due.reference_id, fields, at)

    async def of_day(self, currency: str, day: date) -> list[Document]:
        """Every record of (`currency`, `day`), by reference."""
        query = {"currency": currency, "date": day.isoformat()}
        cursor = self._collection.find(query).sort("_id", ASCENDING)
        return [self._view(document) async for document in cursor]

    async def complete_run(self, currency: str, day: date, at: datetime) -> None:
        """One document per completed (currency, day), inserted once: the first `at` is kept."""
        run_id = f"{currency}:{day.isoformat()}"
        fields = {"currency": currency, "date": day.isoformat(), "completed_at": at}
        with suppress(DuplicateKeyError):  # a racing run noted it first
            await self._runs.update_one({"_id": run_id}, {"$setOnInsert": fields}, upsert=True)

    async def run_completed(self, currency: str, day: date) -> bool:
        return await self._runs.find_one({"_id": f"{currency}:{day.isoformat()}"}) is not None

    async def newest_completed(self, currency: str) -> date | None:
        newest = await self._runs.find_one(
            {"currency": currency}, {"date": 1}, sort=[("date", DESCENDING)]
        )
        return None if newest is None else date.fromisoformat(newest["date"])
