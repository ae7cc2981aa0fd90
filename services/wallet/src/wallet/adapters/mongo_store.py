"""The ledger store on MongoDB: the event store and its read models, one transaction per batch.

Collections:
- `ledger_outcomes` (formerly `wallet_events`): one document per outcome, rejections included
  (`_id` = transaction_id), unique on the idempotency key.
- `wallets`: the seed's shape plus `savings_balance` and `version`, unique on (user_id, currency).
- `wallet_transactions`: the seed's shape plus the ledger transaction and the other balances after.
- `ledger_accounts`: platform and external balances, kept by `$inc` (commutative: no version guard).

A batch costs two reads and one transaction of at most five writes plus commitTransaction,
whatever its size: round trips, not Python, bound a ledger.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from bson import ObjectId
from bson.codec_options import CodecOptions
from pymongo import ASCENDING, DESCENDING, IndexModel, ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.write_concern import WriteConcern

from wallet.adapters.legacy_source import id_key, plain_document, snapshot_collection
from wallet.adapters.mongo_documents import (
    ACCOUNTS,
    HISTORY,
    LEDGER_ROW,
    LEDGER_WALLET,
    LEGACY_OUTCOMES,
    LEGACY_WALLET,
    OUTCOMES,
    SEED_ROW,
    WALLETS,
    Document,
    account_document,
    account_filter,
    from_d128,
    history_document,
    history_filter,
    history_of,
    is_ledger_row,
    is_ledger_wallet,
    key_filter,
    key_of,
    legacy_wallet_of,
    outcome_document,
    outcome_of,
    to_d128,
    wallet_balances,
    wallet_document,
    wallet_filter,
    wallet_of,
)
from wallet.application.ports import ConcurrencyConflict, StoreTimeout, TransientStoreError
from wallet.domain.ledger import ZERO, AccountKey, WalletKey
from wallet.domain.records import (
    HistoryRow,
    IdempotencyKey,
    LedgerBatch,
    LegacyDocument,
    Outcome,
    StoredBalances,
    WalletRecord,
)

# Another writer got there first: a duplicate key (an idempotency key, a wallet created by two
# batches, a history row) or a write conflict inside the transaction.
_CONFLICT_CODES: Final = frozenset(
    {
        11000,  # DuplicateKey
        11001,  # DuplicateKey, as older servers report it
        112,  # WriteConflict
    }
)
# The server cannot answer now (failover, shutdown, timeouts): the same request may work later.
_TRANSIENT_CODES: Final = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        134,  # ReadConcernMajorityNotAvailableYet
        189,  # PrimarySteppedDown
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
# The server gave up on the request's time limit: a smaller batch may fit where this one did not.
_TIME_LIMIT_CODES: Final = frozenset(
    {
        50,  # MaxTimeMSExpired
        262,  # ExceededTimeLimit
    }
)
# Error text carried into the port's errors (and the service's retry log): enough to tell what
# clashed, without whole documents.
_MESSAGE_LIMIT: Final = 300
# commitTransaction whose result is unknown is retried as is: MongoDB's documented recipe, and safe
# because a commit is idempotent within its session.
_COMMIT_ATTEMPTS: Final = 3
# Reads of the whole store (replay) come in batches of this many documents.
_SCAN_BATCH: Final = 1000
_MAJORITY: Final = WriteConcern("majority")

_REBUILD_SUFFIX: Final = "_rebuild"
_PROJECTIONS: Final = (WALLETS, HISTORY, ACCOUNTS)

# Default (key-derived) names: an index the seed's migration already made on the same keys is then
# recognised as existing instead of clashing under another name.
INDEXES: Final[dict[str, tuple[IndexModel, ...]]] = {
    OUTCOMES: (
        IndexModel(
            [
                ("key.type", ASCENDING),
                ("key.transaction_type", ASCENDING),
                ("key.reference_id", ASCENDING),
            ],
            unique=True,
        ),
        IndexModel([("recorded_at", ASCENDING), ("batch", ASCENDING), ("position", ASCENDING)]),
    ),
    WALLETS: (IndexModel([("user_id", ASCENDING), ("currency", ASCENDING)], unique=True),),
    HISTORY: (
        IndexModel([("transaction_id", ASCENDING)], unique=True),
        IndexModel(
            [("user_id", ASCENDING), ("timestamp", DESCENDING), ("transaction_id", DESCENDING)]
        ),
        IndexModel(
            [
                ("user_id", ASCENDING),
                ("currency", ASCENDING),
                ("timestamp", DESCENDING),
                ("transaction_id", DESCENDING),
            ]
        ),
    ),
    ACCOUNTS: (IndexModel([("account", ASCENDING), ("currency", ASCENDING)], unique=True),),
}


def _error_codes(error: PyMongoError) -> set[int]:
    codes: set[int] = set()
    if isinstance(error, OperationFailure) and error.code is not None:
        codes.add(error.code)
    if isinstance(error, BulkWriteError):
        codes.update(e.get("code", 0) for e in error.details.get("writeErrors", ()))
        codes.update(e.get("code", 0) for e in error.details.get("writeConcernErrors", ()))
    return codes


def _describe(error: PyMongoError) -> str:
    if isinstance(error, BulkWriteError) and error.details.get("writeErrors"):
        text = str(error.details["writeErrors"][0].get("errmsg", error))
    else:
        text = str(error)
    return text[:_MESSAGE_LIMIT]


def classify(error: PyMongoError) -> ConcurrencyConflict | TransientStoreError | None:
    """The port's error for a driver error, or None for a bug (a bad query, a bad document)."""
    codes = _error_codes(error)
    # No server to ask is not a request that took too long: a smaller one would not help.
    timed_out = error.timeout and not isinstance(error, ServerSelectionTimeoutError)
    if timed_out or codes & _TIME_LIMIT_CODES:
        return StoreTimeout(f"MongoDB ran out of time: {_describe(error)}")
    if isinstance(error, ConnectionFailure):
        return TransientStoreError(f"MongoDB unavailable: {_describe(error)}")
    if codes & _CONFLICT_CODES or error.has_error_label("TransientTransactionError"):
        return ConcurrencyConflict(f"conflicting write: {_describe(error)}")
    if (
        codes & _TRANSIENT_CODES
        or error.has_error_label("RetryableWriteError")
        or error.has_error_label("UnknownTransactionCommitResult")
    ):
        return TransientStoreError(f"MongoDB could not answer: {_describe(error)}")
    return None


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except PyMongoError as error:
        mapped = classify(error)
        if mapped is None:
            raise
        raise mapped from error


class MongoLedgerStore:
    """LedgerStore on MongoDB (a replica set: multi-document transactions need one)."""

    def __init__(
        self, db: AsyncDatabase[Document], *, reads: AsyncClientSession | None = None
    ) -> None:
        # Datetimes come back aware, in UTC; MongoDB keeps milliseconds, as the domain clock does.
        self._db: AsyncDatabase[Document] = db.with_options(
            codec_options=CodecOptions(tz_aware=True, tzinfo=UTC)
        )
        self._client = db.client
        # The snapshot session of a view from `reading_at_one_instant`, which the ops reads use.
        self._reads = reads
        self._rename_supported: bool | None = None
        # Legacy documents (the seed's shape) found where a batch's wallets were read, by wallet:
        # the commit that replaces one keeps it as it was (see `_keep_legacy_documents`).
        self._legacy_read: dict[WalletKey, Document] = {}

    @property
    def database(self) -> AsyncDatabase[Document]:
        return self._db

    @property
    def replace_strategy(self) -> str | None:
        """How replace_projections swaps collections here: "rename" or "transaction" (None until
        first asked)."""
        if self._rename_supported is None:
            return None
        return "rename" if self._rename_supported else "transaction"

    def _collection(self, name: str) -> AsyncCollection[Document]:
        return self._db[name]

    async def ensure_indexes(self) -> None:
        """Create every index (idempotent: an existing index with the same spec is left alone),
        after adopting outcomes stored under the collection's former name."""
        with _mapped_errors():
            await self._adopt_legacy_outcomes()
            for name, models in INDEXES.items():
                await self._collection(name).create_indexes(list(models))

    async def _adopt_legacy_outcomes(self) -> None:
        """Outcomes were stored in `wallet_events` (a name that read like the `wallet.events`
        topic): move them to `ledger_outcomes` once, before any consumer starts. Atomic by rename
        where the server has it; on a stand-in without it, copied (indexes first, so the unique key
        still holds) and the old collection dropped after."""
        names = set(await self._db.list_collection_names())
        if LEGACY_OUTCOMES not in names or OUTCOMES in names:
            return
        if await self._supports_rename():
            await self._rename(LEGACY_OUTCOMES, OUTCOMES)
            return
        await self._collection(OUTCOMES).create_indexes(list(INDEXES[OUTCOMES]))
        async for documents in self._batches(LEGACY_OUTCOMES):
            await self._collection(OUTCOMES).insert_many(documents, ordered=True)
        await self._db.drop_collection(LEGACY_OUTCOMES)

    async def _batches(
        self, name: str, query: Document | None = None
    ) -> AsyncIterator[list[Document]]:
        batch: list[Document] = []
        async for document in self._scan(name, [("_id", ASCENDING)], query):
            batch.append(document)
            if len(batch) == _SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    # Write side -------------------------------------------------------------------------------

    async def find_outcomes(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, Outcome]:
        if not keys:
            return {}
        query = {"$or": [key_filter(key) for key in keys]}
        documents = await self._find_all(OUTCOMES, query, len(keys))
        return {key_of(d): outcome_of(d) for d in documents}

    async def read_balances(
        self, wallets: Sequence[WalletKey], accounts: Sequence[AccountKey]
    ) -> StoredBalances:
        if not (wallets or accounts):
            return StoredBalances()
        if not accounts:
            query = {"$or": [wallet_filter(key) for key in wallets]}
            documents = await self._find_all(WALLETS, query, len(wallets))
        else:
            documents = await self._wallets_and_accounts(wallets, accounts)
        found = StoredBalances(accounts=dict.fromkeys(accounts, ZERO))
        for document in documents:
            if "account" in document:
                found.accounts[(document["account"], document["currency"])] = from_d128(
                    document["balance"]
                )
            elif is_ledger_wallet(document):
                record = wallet_of(document)
                found.wallets[record.key] = record
            else:
                # A legacy document counts as no wallet: the first command replaces it.
                self._legacy_read[(document["user_id"], document["currency"])] = document
        return found

    async def _wallets_and_accounts(
        self, wallets: Sequence[WalletKey], accounts: Sequence[AccountKey]
    ) -> list[Document]:
        # One aggregation reads both collections ($unionWith): the platform accounts a batch
        # spends cost no extra round trip.
        match = {"$or": [wallet_filter(key) for key in wallets]} if wallets else {"_id": None}
        union = {
            "coll": ACCOUNTS,
            "pipeline": [{"$match": {"$or": [account_filter(key) for key in accounts]}}],
        }
        with _mapped_errors():
            cursor = await self._collection(WALLETS).aggregate(
                [{"$match": match}, {"$unionWith": union}],
                batchSize=len(wallets) + len(accounts) + 1,
            )
            return await cursor.to_list()

    async def _find_all(self, name: str, query: Document, at_most: int) -> list[Document]:
        # A unique index bounds the answer by the number of keys; one more than that lets the
        # server close the cursor in its first reply instead of waiting for a getMore.
        with _mapped_errors():
            cursor = self._collection(name).find(query, batch_size=at_most + 1)
            return await cursor.to_list()

    async def _keep_legacy_documents(self, batch: LedgerBatch, session: AsyncClientSession) -> None:
        """Copy each legacy document these creates replace into `wallets_legacy_snapshot` (same
        `_id`), in the batch's transaction: a command that reaches a legacy wallet before
        `wallet migrate` does must not erase the balances it held; migrate plans from the copy."""
        legacy = self._legacy_read
        replaced = [legacy[r.key] for r, read in batch.wallets if read == 0 and r.key in legacy]
        if replaced:
            await self._collection(snapshot_collection(WALLETS)).bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in replaced],
                ordered=True,
                session=session,
            )

    async def commit(self, batch: LedgerBatch) -> None:
        if not (batch.outcomes or batch.wallets or batch.history or batch.account_deltas):
            return
        with _mapped_errors():
            async with self._transaction() as session:
                await self._write(batch, session)
        if self._legacy_read:
            for record, read in batch.wallets:
                if read == 0:
                    self._legacy_read.pop(record.key, None)

    async def _write(self, batch: LedgerBatch, session: AsyncClientSession) -> None:
        # Events first: an idempotency key already recorded aborts the batch before anything else.
        if batch.outcomes:
            batch_id = ObjectId()
            events = [outcome_document(o, batch_id, i) for i, o in enumerate(batch.outcomes)]
            await self._collection(OUTCOMES).insert_many(events, ordered=True, session=session)

        if batch.wallets:
            # A new wallet is an upsert that may only replace a legacy document (the seed's shape,
            # no version): a racing creator's ledger wallet does not match, the upsert then hits
            # the unique (user_id, currency) index and the batch fails as a conflict. Creates go
            # before updates so that the bulk write is two commands.
            if self._legacy_read:
                await self._keep_legacy_documents(batch, session)
            creates: list[ReplaceOne[Document] | UpdateOne] = [
                ReplaceOne(
                    {**wallet_filter(record.key), **LEGACY_WALLET},
                    wallet_document(record),
                    upsert=True,
                )
                for record, read in batch.wallets
                if read == 0
            ]
            updates = [
                UpdateOne(
                    {**wallet_filter(record.key), "version": read},
                    {"$set": wallet_balances(record)},
                )
                for record, read in batch.wallets
                if read != 0
            ]
            result = await self._collection(WALLETS).bulk_write(
                [*creates, *updates], ordered=True, session=session
            )
            # A create matches only when it replaces a legacy document; the rest are updates.
            legacy_replaced = len(creates) - result.upserted_count
            if result.matched_count - legacy_replaced != len(updates):
                # Raising inside the transaction aborts it: nothing of the batch is written.
                raise ConcurrencyConflict(
                    f"{len(updates) + legacy_replaced - result.matched_count} wallet(s) changed"
                    " since they were read"
                )

        if batch.history:
            rows = [history_document(row) for row in batch.history]
            await self._collection(HISTORY).insert_many(rows, ordered=True, session=session)

        if batch.account_deltas:
            # A floored account the batch spends from is updated only if it still holds what the
            # batch relied on (no upsert: it exists, or the decision could not have spent it).
            floors = batch.account_floors
            increments = [
                UpdateOne(
                    {**account_filter(key), "balance": {"$gte": to_d128(floors[key])}}
                    if key in floors
                    else account_filter(key),
                    {"$inc": {"balance": to_d128(delta)}},
                    upsert=key not in floors,
                )
                for key, delta in batch.account_deltas.items()
            ]
            result = await self._collection(ACCOUNTS).bulk_write(
                increments, ordered=True, session=session
            )
            if result.matched_count + result.upserted_count != len(increments):
                raise ConcurrencyConflict("a platform account holds less than the batch spends")

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncClientSession]:
        """A session in a transaction, committed when the block ends without an error and aborted
        (nothing written) when it raises."""
        async with (
            self._client.start_session() as session,
            await session.start_transaction(write_concern=_MAJORITY),
        ):
            yield session
            await self._commit_transaction(session)

    @staticmethod
    async def _commit_transaction(session: AsyncClientSession) -> None:
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                await session.commit_transaction()
                return
            except PyMongoError as error:
                if error.has_error_label("UnknownTransactionCommitResult"):
                    if attempt < _COMMIT_ATTEMPTS:
                        continue
                    raise TransientStoreError(
                        f"commit result unknown: {_describe(error)}"
                    ) from error
                if classify(error) is not None:
                    raise
                # Any other refused commit wrote nothing. Retrying the batch is always safe: it is
                # decided again from fresh reads, so a commit that did land answers "duplicate".
                raise TransientStoreError(f"commit refused: {_describe(error)}") from error

    # Read side --------------------------------------------------------------------------------

    async def wallets_of(self, user_id: str) -> list[WalletRecord]:
        with _mapped_errors():
            query = {"user_id": user_id, **LEDGER_WALLET}
            cursor = self._collection(WALLETS).find(query).sort("currency", 1)
            return [wallet_of(d) for d in await cursor.to_list()]

    async def history_of(
        self,
        user_id: str,
        *,
        currency: str | None,
        limit: int,
        before: tuple[datetime, str] | None,
        reference_id: str | None = None,
    ) -> list[HistoryRow]:
        if limit <= 0:
            return []  # MongoDB reads limit 0 as "no limit"
        query = history_filter(user_id, currency, before, reference_id)
        order = [("timestamp", DESCENDING), ("transaction_id", DESCENDING)]
        with _mapped_errors():
            cursor = self._collection(HISTORY).find(query, sort=order, limit=limit)
            return [history_of(d) for d in await cursor.batch_size(limit).to_list()]

    async def account_balances(self) -> dict[tuple[str, str], Decimal]:
        with _mapped_errors():
            documents = await self._collection(ACCOUNTS).find({}, session=self._reads).to_list()
        return {(d["account"], d["currency"]): from_d128(d["balance"]) for d in documents}

    # Ops --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def reading_at_one_instant(self) -> AsyncIterator[MongoLedgerStore]:
        """A view whose reads share one snapshot session: on a replica set each read sees the
        data as of one majority-committed instant, and a batch's transaction is in all of them
        or none. MongoDB keeps that instant `minSnapshotHistoryWindowInSeconds` (300 s by
        default); a read after it fails (SnapshotTooOld) and the command stops with an error.
        The embedded stand-in accepts the session and reads the latest data."""
        async with self._client.start_session(snapshot=True) as session:
            yield MongoLedgerStore(self._db, reads=session)

    async def all_outcomes(self) -> AsyncIterator[Outcome]:
        order = [("recorded_at", ASCENDING), ("batch", ASCENDING), ("position", ASCENDING)]
        async for document in self._scan(OUTCOMES, order):
            yield outcome_of(document)

    async def all_wallets(self) -> AsyncIterator[WalletRecord]:
        async for document in self._scan(WALLETS, [("_id", ASCENDING)]):
            if is_ledger_wallet(document):
                yield wallet_of(document)

    async def legacy_wallets(self) -> list[LegacyDocument]:
        with _mapped_errors():
            cursor = self._collection(WALLETS).find(LEGACY_WALLET, session=self._reads)
            cursor = cursor.sort("_id", 1)
            return [
                LegacyDocument(legacy_wallet_of(document), plain_document(document))
                for document in await cursor.to_list()
            ]

    async def replaced_legacy_wallets(self) -> list[LegacyDocument]:
        with _mapped_errors():
            legacy = self._collection(WALLETS).find(
                LEGACY_WALLET, projection=["_id"], session=self._reads
            )
            still_there = {id_key(document) async for document in legacy}
        return [
            LegacyDocument(legacy_wallet_of(document), plain_document(document))
            async for document in self._scan(snapshot_collection(WALLETS), [("_id", ASCENDING)])
            if id_key(document) not in still_there
        ]

    async def all_history(self) -> AsyncIterator[HistoryRow]:
        # Client-made ObjectIds of one process increase: _id order is insertion order.
        async for document in self._scan(HISTORY, [("_id", ASCENDING)]):
            if is_ledger_row(document):  # the seed's own rows are not the ledger's history
                yield history_of(document)

    async def _scan(
        self, name: str, order: list[tuple[str, int]], query: Document | None = None
    ) -> AsyncIterator[Document]:
        with _mapped_errors():
            cursor = self._collection(name).find(
                query or {}, sort=order, batch_size=_SCAN_BATCH, session=self._reads
            )
            async for document in cursor:
                yield document

    async def replace_projections(
        self,
        wallets: Sequence[WalletRecord],
        history: Sequence[HistoryRow],
        accounts: dict[tuple[str, str], Decimal],
    ) -> None:
        """Swap in freshly built read models. Run it with the consumers stopped: a batch committed
        during the swap would be lost from the projections (never from the events). The seed's own
        `wallet_transactions` rows are no projection: they are kept as they are."""
        documents = {
            WALLETS: [wallet_document(w) for w in wallets],
            HISTORY: [history_document(row) for row in history],
            ACCOUNTS: [account_document(key, balance) for key, balance in accounts.items()],
        }
        with _mapped_errors():
            if await self._supports_rename():
                await self._replace_by_rename(documents)
            else:
                await self._replace_in_transaction(documents)

    async def _supports_rename(self) -> bool:
        """Whether renameCollection (run on admin, as MongoDB requires) works here: it does on
        MongoDB; a stand-in server may lack it."""
        if self._rename_supported is None:
            probe, target = "_rename_probe", "_rename_probe_target"
            await self._db.drop_collection(probe)
            await self._db.create_collection(probe)
            try:
                await self._rename(probe, target)
                self._rename_supported = True
            except OperationFailure:
                self._rename_supported = False
            finally:
                await self._db.drop_collection(probe)
                await self._db.drop_collection(target)
        return self._rename_supported

    async def _rename(self, source: str, target: str) -> None:
        db = self._db.name
        await self._client.admin.command(
            "renameCollection", f"{db}.{source}", to=f"{db}.{target}", dropTarget=True
        )

    async def _replace_by_rename(self, documents: dict[str, list[Document]]) -> None:
        """Fill `<name>_rebuild` collections (indexes first: they also create empty collections),
        then rename each over its live one. Each rename is atomic; readers never see a half-filled
        collection. No transaction, so no limit on size or duration: what real MongoDB runs."""
        for name in _PROJECTIONS:
            rebuild = name + _REBUILD_SUFFIX
            await self._db.drop_collection(rebuild)
            await self._collection(rebuild).create_indexes(list(INDEXES[name]))
            if documents[name]:
                await self._collection(rebuild).insert_many(documents[name], ordered=False)
        async for seed_rows in self._batches(HISTORY, SEED_ROW):
            await self._collection(HISTORY + _REBUILD_SUFFIX).insert_many(seed_rows, ordered=False)
        for name in _PROJECTIONS:
            await self._rename(name + _REBUILD_SUFFIX, name)

    async def _replace_in_transaction(self, documents: dict[str, list[Document]]) -> None:
        """Empty and refill the live collections in one transaction (indexes stay in place). All
        three swap at once, but a transaction is bounded in size and time (60 s by default), so
        this is only for small stores and servers without renameCollection."""
        async with self._transaction() as session:
            for name in _PROJECTIONS:
                collection = self._collection(name)
                await collection.delete_many(LEDGER_ROW if name == HISTORY else {}, session=session)
                if documents[name]:
                    await collection.insert_many(documents[name], session=session)
