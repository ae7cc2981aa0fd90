"""How the MongoDB store turns driver errors into the port's: no server needed."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from wallet.adapters.mongo_store import MongoLedgerStore, classify
from wallet.application.ports import ConcurrencyConflict, StoreTimeout, TransientStoreError
from wallet.domain.ledger import Balances
from wallet.domain.records import LedgerBatch, WalletRecord


def labelled(code: int | None, *labels: str) -> OperationFailure:
    return OperationFailure("failed", code=code, details={"errorLabels": list(labels)})


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DuplicateKeyError("E11000 duplicate key", code=11000), ConcurrencyConflict),
        (
            BulkWriteError({"writeErrors": [{"index": 3, "code": 11000, "errmsg": "dup"}]}),
            ConcurrencyConflict,
        ),
        (labelled(112), ConcurrencyConflict),  # WriteConflict
        (labelled(251, "TransientTransactionError"), ConcurrencyConflict),  # NoSuchTransaction
        (AutoReconnect("connection reset"), TransientStoreError),
        (NetworkTimeout("timed out"), StoreTimeout),
        (NotPrimaryError("not primary", {"code": 10107}), TransientStoreError),
        (ServerSelectionTimeoutError("no server"), TransientStoreError),
        (ExecutionTimeout("operation exceeded time limit", code=50), StoreTimeout),
        (labelled(262), StoreTimeout),  # ExceededTimeLimit
        (labelled(189), TransientStoreError),  # PrimarySteppedDown
        (labelled(91), TransientStoreError),  # ShutdownInProgress
        (labelled(None, "RetryableWriteError"), TransientStoreError),
        (labelled(None, "UnknownTransactionCommitResult"), TransientStoreError),
        (labelled(2), type(None)),  # BadValue: a bug, raised as is
    ],
)
def test_driver_errors_map_to_the_port(error: PyMongoError, expected: type) -> None:
    assert type(classify(error)) is expected


class FakeSession:
    """commit_transaction answers from a script: an error to raise, or None for success."""

    def __init__(self, *answers: PyMongoError | None) -> None:
        self.answers = list(answers)
        self.commits = 0

    async def commit_transaction(self) -> None:
        self.commits += 1
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer


async def commit_with(session: FakeSession) -> None:
    await MongoLedgerStore._commit_transaction(session)  # type: ignore[arg-type]


async def test_an_unknown_commit_result_is_retried_as_is() -> None:
    unknown = labelled(None, "UnknownTransactionCommitResult")
    session = FakeSession(unknown, unknown, None)
    await commit_with(session)
    assert session.commits == 3


async def test_a_commit_that_stays_unknown_is_transient() -> None:
    unknown = labelled(None, "UnknownTransactionCommitResult")
    with pytest.raises(TransientStoreError):
        await commit_with(FakeSession(unknown, unknown, unknown))


async def test_any_other_refused_commit_is_transient_and_not_retried() -> None:
    # The stand-in's answer to overlapping transactions: no code, no label.
    refused = OperationFailure("Write conflict during transaction commit")
    session = FakeSession(refused)
    with pytest.raises(TransientStoreError):
        await commit_with(session)
    assert session.commits == 1


async def test_a_labelled_conflict_at_commit_stays_a_conflict() -> None:
    conflict = labelled(251, "TransientTransactionError")
    with pytest.raises(OperationFailure):  # mapped by the caller, as every other error
        await commit_with(FakeSession(conflict))
    assert isinstance(classify(conflict), ConcurrencyConflict)


@pytest.fixture
def unreachable_store() -> MongoLedgerStore:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=100
    )
    return MongoLedgerStore(client["nowhere"])


async def test_an_unreachable_server_is_transient_on_reads_and_commits(
    unreachable_store: MongoLedgerStore,
) -> None:
    with pytest.raises(TransientStoreError):
        await unreachable_store.read_balances([("alice", "BTC")], [])
    with pytest.raises(TransientStoreError):
        await unreachable_store.find_outcomes([("credit", "deposit", "r1")])
    now = datetime(2026, 11, 26, tzinfo=UTC)
    record = WalletRecord("alice", "BTC", Balances(available=Decimal(1)), 1, now, now)
    with pytest.raises(TransientStoreError):
        await unreachable_store.commit(LedgerBatch(outcomes=(), wallets=((record, 0),), history=()))
    await unreachable_store.commit(LedgerBatch((), (), ()))  # nothing to write: no round trip
    await unreachable_store.database.client.close()
