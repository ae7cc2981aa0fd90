"""The seed's design, small, as the reference: every command handled on its own.

One `find_one_and_update` per balance change (guarded by `$gte` where money leaves) plus one
`insert_one` into `wallet_transactions` per row, as the seed's wallet_service does; before that one
`find_one` on `wallet_transactions` by (reference_id, transaction_type), the seed's guard against
double-crediting, so that resends are answered as duplicates here too. Nothing is batched and nothing
spans documents atomically (a transfer is two independent updates), which is the seed's design.

It runs over anything with PyMongo's collection calls: the real `AsyncCollection` (with a Decimal
codec) for the round-trip count, or `MemoryCollection`, which emulates those three calls with dicts
and counts them, for the in-memory comparison.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from bson.codec_options import CodecOptions, TypeCodec, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo import ReturnDocument

from shared.messaging import (
    CreditCommand,
    DebitCommand,
    LockCommand,
    ReleaseLockedCommand,
    TransferCommand,
    UnlockCommand,
    WalletCommand,
)
from shared.money import LEDGER_CONTEXT

Document = dict[str, Any]
ZERO = Decimal(0)
BUCKETS = ("available_balance", "locked_balance", "total_balance")


class SeedCollection(Protocol):
    """The three PyMongo calls the seed uses."""

    async def find_one(self, filter: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any: ...

    async def find_one_and_update(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *args: Any, **kwargs: Any
    ) -> Any: ...

    async def insert_one(self, document: Any, *args: Any, **kwargs: Any) -> Any: ...


class DecimalCodec(TypeCodec):
    """Decimal in Python, Decimal128 in MongoDB: the seed kept floats, the benchmark keeps money exact."""

    python_type = Decimal
    bson_type = Decimal128

    def transform_python(self, value: Decimal) -> Decimal128:
        return Decimal128(value)

    def transform_bson(self, value: Decimal128) -> Decimal:
        return value.to_decimal()


DECIMAL_CODEC_OPTIONS: CodecOptions[Document] = CodecOptions(
    tz_aware=True, type_registry=TypeRegistry([DecimalCodec()])
)


def _matches(document: Document, query: Mapping[str, Any]) -> bool:
    for name, condition in query.items():
        value = document.get(name)
        if isinstance(condition, Mapping):
            if value is None or value < condition["$gte"]:
                return False
        elif value != condition:
            return False
    return True


class MemoryCollection:
    """A collection in a dict, grouped by the fields of one index; counts every call.

    Only what the seed needs: equality on the index fields plus `$gte` in filters; `$inc`, `$set`
    and `$setOnInsert` in updates; upsert. Lookups go through the index, as MongoDB's would.
    """

    def __init__(self, *index: str) -> None:
        self._index = index
        self.documents: dict[tuple[Any, ...], list[Document]] = {}
        self.round_trips = 0

    def _first(self, query: Mapping[str, Any]) -> Document | None:
        key = tuple(query[name] for name in self._index)
        return next((d for d in self.documents.get(key, ()) if _matches(d, query)), None)

    async def find_one(self, filter: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        found = self._first(filter)
        return None if found is None else dict(found)

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        *args: Any,
        upsert: bool = False,
        **kwargs: Any,
    ) -> Any:
        self.round_trips += 1
        document = self._first(filter)
        if document is None:
            key = tuple(filter[name] for name in self._index)
            if not upsert or key in self.documents:
                return None
            document = {name: filter[name] for name in self._index}
            document.update(update.get("$setOnInsert", {}))
            self.documents[key] = [document]
        for name, delta in update.get("$inc", {}).items():
            document[name] = LEDGER_CONTEXT.add(document.get(name, ZERO), delta)
        document.update(update.get("$set", {}))
        return dict(document)

    async def insert_one(self, document: Any, *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        key = tuple(document[name] for name in self._index)
        self.documents.setdefault(key, []).append(dict(document))
        return key

    def all(self) -> list[Document]:
        return [d for group in self.documents.values() for d in group]


@dataclass(frozen=True, slots=True)
class SeedResult:
    status: str  # applied | duplicate | rejected
    reason: str | None = None


APPLIED = SeedResult("applied")
DUPLICATE = SeedResult("duplicate")


def _insufficient(bucket: str) -> SeedResult:
    return SeedResult("rejected", f"insufficient {bucket} balance")


class SeedWalletService:
    """The seed's wallet_service API: credit, debit, lock, unlock, release, transfer."""

    def __init__(self, wallets: SeedCollection, transactions: SeedCollection) -> None:
        self.wallets = wallets
        self.transactions = transactions

    async def _seen(self, reference_id: str, transaction_type: str) -> bool:
        found = await self.transactions.find_one(
            {"reference_id": reference_id, "transaction_type": transaction_type}
        )
        return found is not None

    async def _change(
        self,
        user_id: str,
        currency: str,
        inc: dict[str, Decimal],
        *,
        guard: tuple[str, Decimal] | None = None,
    ) -> Document | None:
        now = datetime.now(UTC)
        query: Document = {"user_id": user_id, "currency": currency}
        if guard is not None:
            query[guard[0]] = {"$gte": guard[1]}
        # Only a credit may create the wallet; the buckets it does not touch start at zero.
        on_insert: Document = {"created_at": now} | {n: ZERO for n in BUCKETS if n not in inc}
        update = {"$inc": inc, "$set": {"last_updated": now}, "$setOnInsert": on_insert}
        document: Document | None = await self.wallets.find_one_and_update(
            query, update, upsert=guard is None, return_document=ReturnDocument.AFTER
        )
        return document

    async def _log(
        self,
        wallet: Document,
        amount: Decimal,
        transaction_type: str,
        direction: str,
        reference_id: str,
        metadata: dict[str, Any] | None,
    ) -> None:
        await self.transactions.insert_one(
            {
                "transaction_id": uuid.uuid4().hex,
                "user_id": wallet["user_id"],
                "currency": wallet["currency"],
                "amount": amount,
                "transaction_type": transaction_type,
                "direction": direction,
                "reference_id": reference_id,
                "balance_after": wallet["available_balance"],
                "metadata": metadata or {},
                "timestamp": datetime.now(UTC),
            }
        )

    async def credit(
        self,
        user_id: str,
        currency: str,
        amount: Decimal,
        transaction_type: str,
        reference_id: str,
        metadata: dict[str, Any] | None = None,
    ) -> SeedResult:
        if await self._seen(reference_id, transaction_type):
            return DUPLICATE
        inc = {"available_balance": amount, "total_balance": amount}
        wallet = await self._change(user_id, currency, inc)
        assert wallet is not None  # an upsert always returns the document
        await self._log(wallet, amount, transaction_type, "credit", reference_id, metadata)
        return APPLIED

    async def _move(
        self,
        user_id: str,
        currency: str,
        amount: Decimal,
        source: str,
        inc: dict[str, Decimal],
        kind: str,
        direction: str,
        reference_id: str,
        metadata: dict[str, Any] | None,
    ) -> SeedResult:
        if await self._seen(reference_id, kind):
            return DUPLICATE
        wallet = await self._change(user_id, currency, inc, guard=(source, amount))
        if wallet is None:
            return _insufficient(source)
        await self._log(wallet, amount, kind, direction, reference_id, metadata)
        return APPLIED

    async def debit(
        self,
        user_id: str,
        currency: str,
        amount: Decimal,
        transaction_type: str,
        reference_id: str,
        metadata: dict[str, Any] | None = None,
    ) -> SeedResult:
        inc = {"available_balance": -amount, "total_balance": -amount}
        return await self._move(
            user_id, currency, amount, "available_balance", inc,
            transaction_type, "debit", reference_id, metadata,
        )  # fmt: skip

    async def lock_balance(
        self, user_id: str, currency: str, amount: Decimal, lock_type: str, reference_id: str
    ) -> SeedResult:
        inc = {"available_balance": -amount, "locked_balance": amount}
        return await self._move(
            user_id, currency, amount, "available_balance", inc,
            lock_type, "lock", reference_id, None,
        )  # fmt: skip

    async def unlock_balance(
        self, user_id: str, currency: str, amount: Decimal, unlock_type: str, reference_id: str
    ) -> SeedResult:
        inc = {"available_balance": amount, "locked_balance": -amount}
        return await self._move(
            user_id, currency, amount, "locked_balance", inc,
            unlock_type, "unlock", reference_id, None,
        )  # fmt: skip

    async def release_locked_balance(
        self, user_id: str, currency: str, amount: Decimal, release_type: str, reference_id: str
    ) -> SeedResult:
        inc = {"locked_balance": -amount, "total_balance": -amount}
        return await self._move(
            user_id, currency, amount, "locked_balance", inc,
            release_type, "release", reference_id, None,
        )  # fmt: skip

    async def transfer(
        self,
        from_user: str,
        to_user: str,
        currency: str,
        amount: Decimal,
        transfer_type: str,
        reference_id: str,
    ) -> SeedResult:
        if await self._seen(reference_id, transfer_type):
            return DUPLICATE
        out = {"available_balance": -amount, "total_balance": -amount}
        payer = await self._change(from_user, currency, out, guard=("available_balance", amount))
        if payer is None:
            return _insufficient("available_balance")
        into = {"available_balance": amount, "total_balance": amount}
        payee = await self._change(to_user, currency, into)
        assert payee is not None
        await self._log(payer, amount, transfer_type, "debit", reference_id, None)
        await self._log(payee, amount, transfer_type, "credit", reference_id, None)
        return APPLIED

    async def handle(self, command: WalletCommand) -> SeedResult:
        """One command through the seed's API, as a caller of the seed would have made it."""
        user, currency, amount = command.user_id, command.currency, command.amount
        kind, reference = command.transaction_type, command.reference_id
        match command:
            case CreditCommand():
                return await self.credit(user, currency, amount, kind, reference, command.metadata)
            case DebitCommand():
                return await self.debit(user, currency, amount, kind, reference, command.metadata)
            case LockCommand():
                return await self.lock_balance(user, currency, amount, kind, reference)
            case UnlockCommand():
                return await self.unlock_balance(user, currency, amount, kind, reference)
            case ReleaseLockedCommand():
                return await self.release_locked_balance(user, currency, amount, kind, reference)
            case TransferCommand():
                return await self.transfer(user, command.to_user, currency, amount, kind, reference)
        raise ValueError(f"the seed has no {command.type}")


def memory_seed_wallet() -> tuple[SeedWalletService, MemoryCollection, MemoryCollection]:
    """The seed over dicts: (service, wallets, wallet_transactions)."""
    wallets = MemoryCollection("user_id", "currency")
    transactions = MemoryCollection("reference_id", "transaction_type")
    return SeedWalletService(wallets, transactions), wallets, transactions


# (user, $inc, the bucket that must cover the amount or None): the wallet changes of one command.
Move = tuple[str, dict[str, Decimal], str | None]


def seed_moves(command: WalletCommand) -> list[Move]:
    """What the seed's call for a command changes, wallet by wallet."""
    user, amount = command.user_id, command.amount
    available, locked, total = BUCKETS
    into = {available: amount, total: amount}
    out = {available: -amount, total: -amount}
    match command:
        case CreditCommand():
            return [(user, into, None)]
        case DebitCommand():
            return [(user, out, available)]
        case LockCommand():
            return [(user, {available: -amount, locked: amount}, available)]
        case UnlockCommand():
            return [(user, {available: amount, locked: -amount}, locked)]
        case ReleaseLockedCommand():
            return [(user, {locked: -amount, total: -amount}, locked)]
        case TransferCommand():
            return [(user, out, available), (command.to_user, into, None)]
    raise ValueError(f"the seed has no {command.type}")


class TransactionalSeedWallet:
    """The seed's wallet as it worked, on MongoDB: every call is one transaction of its own.

    In it: the seed's guard against double crediting (a `find` of the reference in
    `wallet_transactions`), then per wallet a read, the balance check in Python and the update,
    then one history row per wallet, then the commit. Request handlers call it concurrently.
    `serialise` runs one transaction at a time: the embedded MongoDB refuses any commit that
    overlaps another one's, so concurrent calls would measure its retries.
    """

    def __init__(self, client: Any, database: Any, *, serialise: bool) -> None:
        self._client = client
        self.wallets = database["wallets"]
        self.transactions = database["wallet_transactions"]
        self._serialise = serialise
        self._one_at_a_time = asyncio.Lock()

    async def handle(self, command: WalletCommand) -> SeedResult:
        if not self._serialise:
            return await self._in_transaction(command)
        async with self._one_at_a_time:
            return await self._in_transaction(command)

    async def _in_transaction(self, command: WalletCommand) -> SeedResult:
        async with self._client.start_session() as session:

            async def call(session: Any) -> SeedResult:
                return await self._apply(command, session)

            result: SeedResult = await session.with_transaction(call)
            return result

    async def _apply(self, command: WalletCommand, session: Any) -> SeedResult:
        reference = {
            "reference_id": command.reference_id,
            "transaction_type": command.transaction_type,
        }
        if await self.transactions.find_one(reference, session=session) is not None:
            return DUPLICATE
        now = datetime.now(UTC)
        rows = []
        for user, inc, guard in seed_moves(command):
            query = {"user_id": user, "currency": command.currency}
            wallet = await self.wallets.find_one(query, session=session)
            if guard is not None and (wallet is None or wallet[guard] < command.amount):
                return _insufficient(guard)
            on_insert = {"created_at": now} | {n: ZERO for n in BUCKETS if n not in inc}
            await self.wallets.update_one(
                query,
                {"$inc": inc, "$set": {"last_updated": now}, "$setOnInsert": on_insert},
                upsert=True,
                session=session,
            )
            rows.append({**reference, "transaction_id": uuid.uuid4().hex, "user_id": user,
                         "currency": command.currency, "amount": command.amount,
                         "metadata": command.metadata, "timestamp": now})  # fmt: skip
        for row in rows:
            await self.transactions.insert_one(row, session=session)
        return APPLIED
