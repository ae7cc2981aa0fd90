"""What only the MongoDB store has: round trips per batch, document shapes, indexes, swaps."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from bson import Decimal128
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import DuplicateKeyError

from shared.messaging import CreditCommand, ExchangeCommand, TransferLockedCommand
from shared.testing.fixtures import unique_database_name
from wallet.adapters.legacy_source import snapshot_collection
from wallet.adapters.mongo_documents import (
    ACCOUNTS,
    HISTORY,
    LEGACY_OUTCOMES,
    OUTCOMES,
    WALLETS,
)
from wallet.adapters.mongo_store import INDEXES, MongoLedgerStore
from wallet.application.ledger_service import LedgerService
from wallet.application.reconciliation import verify

pytestmark = pytest.mark.integration

D = Decimal


class CommandLog(monitoring.CommandListener):
    """Names of the commands the driver sends, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest_asyncio.fixture
async def monitored(mongodb_url: str) -> AsyncIterator[tuple[MongoLedgerStore, CommandLog]]:
    """A store on a client of its own that logs every command, on a fresh database."""
    log = CommandLog()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, tz_aware=True, event_listeners=[log]
    )
    name = unique_database_name("store_mongo")
    store = MongoLedgerStore(client[name])
    await store.ensure_indexes()
    try:
        yield store, log
    finally:
        await client.drop_database(name)
        await client.close()


def credit(user: str, currency: str, amount: str, ref: str) -> CreditCommand:
    return CreditCommand(
        reference_id=ref,
        transaction_type="deposit_nowpayments",
        user_id=user,
        currency=currency,
        amount=D(amount),
        metadata={"order_id": f"order-{ref}"},
    )


async def test_a_batch_of_200_commands_costs_at_most_8_server_commands(
    monitored: tuple[MongoLedgerStore, CommandLog],
) -> None:
    store, log = monitored
    service = LedgerService(store)
    await service.handle_batch([credit(f"old{i:03d}", "BTC", "1", f"seed-{i}") for i in range(100)])
    # Half the batch updates stored wallets, half creates new ones: the costliest shape.
    batch = [credit(f"old{i:03d}", "BTC", "0.5", f"more-{i}") for i in range(100)]
    batch += [credit(f"new{i:03d}", "USDT", "10", f"first-{i}") for i in range(100)]
    log.names.clear()

    started = time.perf_counter()
    report = await service.handle_batch(batch)
    elapsed = time.perf_counter() - started

    assert (report.count("applied"), report.attempts) == (200, 1)
    sent = list(log.names)
    assert len(sent) <= 8, f"{len(sent)} commands for one batch of 200 ({elapsed:.2f} s): {sent}"
    # Keys, wallets; then in one transaction: events, new and updated wallets (one update command:
    # a new wallet is an upsert that may replace only a legacy document), history rows, platform
    # account increments, commit.
    assert sent == [
        "find",
        "find",
        "insert",
        "update",
        "insert",
        "update",
        "commitTransaction",
    ], sent
    (wallet,) = await store.wallets_of("old007")
    assert (wallet.balances.available, wallet.version) == (D("1.5"), 2)
    accounts = await store.account_balances()
    assert accounts[("external:nowpayments", "USDT")] == D("-1000")


async def test_documents_keep_the_seed_shapes_with_exact_decimal128(
    monitored: tuple[MongoLedgerStore, CommandLog],
) -> None:
    store, _ = monitored
    service = LedgerService(store)
    await service.handle_batch(
        [
            credit("seller", "BTC", "1.5", "dep-1"),
            CreditCommand(reference_id="dep-2", transaction_type="deposit_nowpayments",
                          user_id="seller", currency="BTC", amount=D("0.25")),
        ]
    )  # fmt: skip
    db = store.database
    # Nothing is locked, so this is rejected: and recorded like an applied command.
    await service.handle_batch(
        [
            TransferLockedCommand(reference_id="t1", transaction_type="p2p_completed",
                                  user_id="seller", to_user="buyer", currency="BTC",
                                  amount=D("0.1"), fee=D("0.001")),
        ]
    )  # fmt: skip
    rejected = await db[OUTCOMES].find_one({"key.reference_id": "t1"})
    assert rejected is not None
    assert rejected["status"] == "rejected"
    assert rejected["reason"] == "insufficient_funds"
    assert rejected["command"]["amount"] == Decimal128("0.10000000")
    assert rejected["command"]["fee"] == Decimal128("0.00100000")
    assert rejected["key"] == {
        "type": "transfer_locked",
        "transaction_type": "p2p_completed",
        "reference_id": "t1",
    }

    wallet = await db[WALLETS].find_one({"user_id": "seller"}, {"_id": 0})
    assert wallet is not None
    assert set(wallet) == {
        "user_id",
        "currency",
        "available_balance",
        "locked_balance",
        "total_balance",
        "savings_balance",
        "holds",
        "version",
        "created_at",
        "last_updated",
    }
    assert wallet["holds"] == []  # nothing locked
    assert wallet["available_balance"] == Decimal128("1.75000000")
    assert wallet["total_balance"] == Decimal128("1.75000000")
    assert wallet["locked_balance"].to_decimal() == 0
    assert wallet["version"] == 2
    assert isinstance(wallet["last_updated"], datetime)
    assert wallet["last_updated"].utcoffset() is not None

    row = await db[HISTORY].find_one({"reference_id": "dep-1"}, {"_id": 0})
    assert row is not None
    assert set(row) == {
        # The seed's fields...
        "transaction_id",
        "user_id",
        "currency",
        "amount",
        "transaction_type",
        "direction",
        "reference_id",
        "balance_after",
        "metadata",
        "timestamp",
        # ...and the ledger's.
        "ledger_transaction_id",
        "locked_balance_after",
        "savings_balance_after",
    }
    assert (row["amount"], row["direction"], row["metadata"]) == (
        Decimal128("1.50000000"),
        "credit",
        {"order_id": "order-dep-1"},
    )

    event = await db[OUTCOMES].find_one({"key.reference_id": "dep-1"})
    assert event is not None
    assert event["_id"] == row["ledger_transaction_id"]
    assert event["command"]["metadata"] == {"order_id": "order-dep-1"}
    assert [e["amount"] for e in event["entries"]] == [
        Decimal128("-1.50000000"),
        Decimal128("1.50000000"),
    ]
    account = await db[ACCOUNTS].find_one({}, {"_id": 0})
    assert account == {
        "account": "external:nowpayments",
        "currency": "BTC",
        "balance": Decimal128("-1.75000000"),
    }


async def index_names(store: MongoLedgerStore, collection: str) -> set[str]:
    return set(await store.database[collection].index_information())


async def test_ensure_indexes_is_idempotent(monitored: tuple[MongoLedgerStore, CommandLog]) -> None:
    store, _ = monitored
    await store.ensure_indexes()
    for collection, models in INDEXES.items():
        expected = {model.document["name"] for model in models}
        assert expected <= await index_names(store, collection)


async def test_swapped_in_projections_have_their_indexes(
    monitored: tuple[MongoLedgerStore, CommandLog], is_stand_in: bool
) -> None:
    store, _ = monitored
    service = LedgerService(store)
    await service.handle_batch([credit("alice", "BTC", "1", "d1")])
    wallets = [w async for w in store.all_wallets()]
    history = [h async for h in store.all_history()]
    await store.replace_projections(wallets, history, await store.account_balances())

    # The stand-in has no renameCollection on admin, so the swap there is one transaction.
    assert store.replace_strategy == ("transaction" if is_stand_in else "rename")
    for collection in (WALLETS, HISTORY, ACCOUNTS):
        expected = {model.document["name"] for model in INDEXES[collection]}
        assert expected <= await index_names(store, collection)
    names = set(await store.database.list_collection_names())
    assert not {n for n in names if n.endswith("_rebuild") or n.startswith("_rename_probe")}
    duplicate = {**(await store.database[WALLETS].find_one({}, {"_id": 0}) or {})}
    with pytest.raises(DuplicateKeyError):
        await store.database[WALLETS].insert_one(duplicate)
    assert await store.wallets_of("alice") == wallets


@pytest.mark.parametrize("strategy", ["the server's", "transaction"])
async def test_the_seeds_history_rows_are_no_projection_read_or_swapped(
    monitored: tuple[MongoLedgerStore, CommandLog], strategy: str
) -> None:
    # The seed's wallet_service wrote wallet_transactions too: float amounts, no ledger fields.
    store, _ = monitored
    if strategy == "transaction":
        store._rename_supported = False
    seed_row = {
        "transaction_id": "6f1c2e0a-seed",
        "user_id": "alice",
        "currency": "BTC",
        "amount": 0.01,
        "transaction_type": "deposit_nowpayments",
        "direction": "credit",
        "reference_id": "payment_12345",
        "balance_after": 1.51,
        "metadata": {},
        "timestamp": datetime(2099, 1, 1, tzinfo=UTC),  # newer than every ledger row
    }
    await store.database[HISTORY].insert_one(dict(seed_row))
    await LedgerService(store).handle_batch([credit("alice", "BTC", "1", "d1")])

    [row] = await store.history_of("alice", currency=None, limit=10, before=None)
    assert row.reference_id == "d1"
    assert await store.history_of(
        "alice", currency="BTC", limit=10, before=None, reference_id="payment_12345"
    ) == []  # fmt: skip
    assert [h.reference_id async for h in store.all_history()] == ["d1"]
    assert await verify(store) == []

    wallets = [w async for w in store.all_wallets()]
    await store.replace_projections(wallets, [row], await store.account_balances())
    kept = (
        await store.database[HISTORY].find({"ledger_transaction_id": {"$exists": False}}).to_list()
    )
    assert [{k: v for k, v in d.items() if k != "_id"} for d in kept] == [seed_row]
    assert [h.reference_id async for h in store.all_history()] == ["d1"]
    assert await verify(store) == []


async def test_verify_catches_a_stored_total_that_drifted_from_its_parts(
    monitored: tuple[MongoLedgerStore, CommandLog],
) -> None:
    # Pages read total_balance straight from the document: it must not drift unnoticed.
    store, _ = monitored
    await LedgerService(store).handle_batch([credit("reader", "BTC", "1.5", "dep-total")])
    await store.database[WALLETS].update_one(
        {"user_id": "reader"}, {"$set": {"total_balance": Decimal128("2.5")}}
    )
    assert [str(d) for d in await verify(store)] == [
        "wallet reader/BTC: total_balance expected 1.5, found 2.5"
    ]


async def test_a_batch_spending_liquidity_reads_it_with_the_wallets_in_one_command(
    monitored: tuple[MongoLedgerStore, CommandLog],
) -> None:
    store, log = monitored
    service = LedgerService(store)
    funding = CreditCommand(reference_id="fund", transaction_type="liquidity_funding",
                            user_id="admin", currency="ETH", amount=D("10"))  # fmt: skip
    await service.handle_batch(
        [funding, *(credit(f"u{i}", "BTC", "1", f"d{i}") for i in range(50))]
    )
    swaps = [
        ExchangeCommand(reference_id=f"s{i}", transaction_type="swap", user_id=f"u{i}",
                        currency="BTC", amount=D("0.1"), receive_currency="ETH",
                        receive_amount=D("0.25"))
        for i in range(50)
    ]  # fmt: skip
    log.names.clear()
    report = await service.handle_batch(swaps)
    # 40 swaps use up the 10 ETH; the last 10 find nothing left.
    assert report.count("applied") == 40
    assert report.count("rejected") == 10
    assert log.names == [
        "find",
        "aggregate",
        "insert",
        "update",
        "insert",
        "update",
        "commitTransaction",
    ], log.names
    assert (await store.account_balances())[("platform:liquidity", "ETH")] == 0


async def test_outcomes_stored_under_the_former_collection_name_are_adopted(
    mongodb_url: str,
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    name = unique_database_name("store_legacy_name")
    try:
        store = MongoLedgerStore(client[name])
        await store.ensure_indexes()
        await LedgerService(store).handle_batch([credit("old", "BTC", "1", "before-upgrade")])
        # As an earlier version left it: the outcomes in wallet_events.
        documents = await store.database[OUTCOMES].find({}).to_list()
        await store.database[LEGACY_OUTCOMES].insert_many(documents)
        await store.database.drop_collection(OUTCOMES)

        upgraded = MongoLedgerStore(client[name])
        await upgraded.ensure_indexes()
        names = set(await upgraded.database.list_collection_names())
        assert LEGACY_OUTCOMES not in names
        ((_, again),) = (
            await LedgerService(upgraded).handle_batch(
                [credit("old", "BTC", "1", "before-upgrade")]
            )
        ).results
        assert (again.status, again.original_status) == ("duplicate", "applied")
        assert await verify(upgraded) == []
    finally:
        await client.drop_database(name)
        await client.close()


async def test_copies_of_replaced_legacy_wallets_are_read_back_exactly(
    monitored: tuple[MongoLedgerStore, CommandLog],
) -> None:
    # The seed's wallets: a command replaces carol's (keeping it as it was), dan's is still there.
    store, _ = monitored
    carol = {
        "_id": "w-carol",
        "user_id": "carol",
        "currency": "BTC",
        "available_balance": Decimal128("0.12345678"),
        "locked_balance": 0.5,
        "total_balance": 0.62345678,
    }
    dan = {"_id": "w-dan", "user_id": "dan", "currency": "ETH", "available_balance": 2.0}
    await store.database[WALLETS].insert_many([dict(carol), dict(dan)])
    assert await store.replaced_legacy_wallets() == []
    await LedgerService(store).handle_batch([credit("carol", "BTC", "1", "dep-carol")])
    # `wallet migrate` keeps every legacy document it plans from: dan's is still in wallets.
    await store.database[snapshot_collection(WALLETS)].insert_one(dict(dan))

    [copy] = await store.replaced_legacy_wallets()
    assert (copy.wallet.user_id, copy.wallet.currency) == ("carol", "BTC")
    assert copy.wallet.fields == {
        "available_balance": "0.12345678",
        "locked_balance": "0.5",
        "total_balance": "0.62345678",
    }
    assert copy.document == {**carol, "available_balance": D("0.12345678")}
    assert [w.wallet.user_id for w in await store.legacy_wallets()] == ["dan"]
