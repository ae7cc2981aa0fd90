"""The ledger through the MongoDB store: concurrent debits, and reconciliation by the ops CLI.

On the embedded MongoDB stand-in here (or a real replica set given by MONGODB_URL). The fifty
debits overlap for real: each is its own transaction, and those that lose the race are refused at
commit and decided again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from bson import Decimal128
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from shared.messaging import CreditCommand, TransferCommand
from tests.reliability.checks import check_ledger
from tests.reliability.commands import deposit, withdrawals
from wallet.adapters.mongo_store import MongoLedgerStore
from wallet.application.ledger_service import LedgerService
from wallet.domain.ledger import Balances
from wallet.entrypoints.cli import app as wallet_cli

pytestmark = pytest.mark.slow


def credit(user: str, amount: str, reference: str) -> CreditCommand:
    return deposit(user, "BTC", amount, reference)


async def test_fifty_concurrent_debits_of_ten_against_one_hundred(
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    store = MongoLedgerStore(mongo_database.client[f"{mongo_database.name[:50]}_race"])
    await store.ensure_indexes()
    ledger = LedgerService(store, max_attempts=60, backoff_seconds=0.01)
    await ledger.handle_batch([credit("alice", "100", "open")])
    debits = withdrawals("alice", "10", 50)
    try:
        reports = await asyncio.gather(*(ledger.handle_batch([d]) for d in debits))
        results = [r.results[0][1] for r in reports]
        # The effective status: a duplicate answers with the first outcome's.
        statuses = Counter(r.original_status or r.status for r in results)
        assert statuses == {"applied": 10, "rejected": 40}
        assert len({e.transaction_id for r in reports for e in r.events}) == 10
        # The race really happened: batches lost on the version guard and were decided again.
        assert max(r.attempts for r in reports) > 1
        (wallet,) = await store.wallets_of("alice")
        assert wallet.balances == Balances()
        applied = [o async for o in store.all_outcomes() if o.status == "applied"]
        assert len(applied) == 11  # the opening credit and ten debits
        await check_ledger(store)
    finally:
        await store.database.client.drop_database(store.database.name)


def cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(wallet_cli, list(args), env=env)
    return result.exit_code, result.output


async def test_verify_names_a_corrupted_wallet_and_replay_repairs_it(
    mongodb_url: str, mongo_database: AsyncDatabase[dict[str, Any]]
) -> None:
    store = MongoLedgerStore(mongo_database)
    await store.ensure_indexes()
    await LedgerService(store).handle_batch(
        [
            credit("alice", "1.5", "p1"),
            credit("bob", "0.25", "p2"),
            TransferCommand(
                user_id="alice",
                to_user="bob",
                currency="BTC",
                amount="0.5",
                transaction_type="p2p_payment",
                reference_id="t1",
            ),
        ]
    )
    env = {"MONGODB_URL": mongodb_url, "WALLET_MONGODB_DATABASE": mongo_database.name}

    # The CLI runs its own event loop, as it does from a shell: off this test's loop.
    assert await asyncio.to_thread(cli, "verify", env=env) == (
        0,
        "ok: projections match the events and every currency sums to zero\n",
    )

    # Someone edits bob's balance by hand, total included (verify reads the stored total).
    await mongo_database["wallets"].update_one(
        {"user_id": "bob", "currency": "BTC"},
        {
            "$set": {
                "available_balance": Decimal128("1000.75"),
                "total_balance": Decimal128("1000.75"),
            }
        },
    )
    code, output = await asyncio.to_thread(cli, "verify", env=env)
    assert code == 1
    assert output.splitlines() == [
        "wallet bob/BTC: available_balance expected 0.75, found 1000.75",
        "wallet bob/BTC: total_balance expected 0.75, found 1000.75",
        "currency BTC: sum of all accounts expected 0, found 1000",
        "3 difference(s) found",
    ]

    code, output = await asyncio.to_thread(cli, "replay", "--yes", env=env)
    assert code == 0, output
    assert output.startswith("replayed: 2 wallets, 4 history rows, 1 platform accounts")
    assert await asyncio.to_thread(cli, "verify", env=env) == (
        0,
        "ok: projections match the events and every currency sums to zero\n",
    )
    (bob,) = await store.wallets_of("bob")
    assert str(bob.balances.available.normalize()) == "0.75"
