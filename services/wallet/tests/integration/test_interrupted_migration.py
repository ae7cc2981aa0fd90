"""`wallet migrate` over the `wallets` collection itself, stopped part-way and run again: the first
opening credit of a legacy document replaces that document with the ledger's wallet, so a rerun
must still know what the legacy document held. Every bucket arrives exactly once and the report
compares the full legacy amounts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from shared.wallet_client import WalletClient
from wallet.adapters.legacy_source import MongoLegacySource
from wallet.application.migration import SendOutcome, WalletCommandSender, migrate
from wallet.application.reconciliation import verify
from wallet.bootstrap import WalletRuntime
from wallet.domain.migration import SEED_WALLETS, OpeningLine

SEED_TIME = datetime(2025, 11, 26, 15, 45, tzinfo=UTC)
IVY_DOCUMENT = ObjectId("65f0000000000000000000b1")
JOE_DOCUMENT = ObjectId("65f0000000000000000000b2")

MAPPING = SEED_WALLETS  # the seed's field names, as verify reads a kept copy


class Stopped(Exception):
    """The migration process ended here (killed, lost its connection, …)."""


class StopsAfter:
    """Sends the first `count` lines for real, then stops as a killed process would."""

    def __init__(self, sender: WalletCommandSender, count: int) -> None:
        self._sender = sender
        self._count = count

    async def send(self, lines: Sequence[OpeningLine]) -> list[SendOutcome]:
        outcomes = await self._sender.send(lines[: self._count])
        assert all(o.status == "applied" for o in outcomes), outcomes
        raise Stopped


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def legacy_wallets(mongo_database: AsyncDatabase[dict[str, Any]]) -> None:
    await mongo_database["wallets"].insert_many(
        [
            {
                "_id": IVY_DOCUMENT,
                "user_id": "old-ivy",
                "currency": "BTC",
                "available_balance": 1.5,
                "locked_balance": 0.25,
                "savings_balance": 0.125,
                "total_balance": 1.875,
                "created_at": SEED_TIME,
                "last_updated": SEED_TIME,
            },
            {
                "_id": JOE_DOCUMENT,
                "user_id": "old-joe",
                "currency": "ETH",
                "available_balance": 3.0,
                "locked_balance": 1.0,
                "total_balance": 4.0,
                "created_at": SEED_TIME,
                "last_updated": SEED_TIME,
            },
        ]
    )


async def balances_of(runtime: WalletRuntime, user: str) -> dict[str, tuple[Decimal, ...]]:
    return {
        w.currency: (w.balances.available, w.balances.locked, w.balances.savings)
        for w in await runtime.store.wallets_of(user)
    }


async def test_a_rerun_after_an_interrupted_in_place_migration_brings_every_bucket_in(
    legacy_wallets: None,
    wallet_runtime: WalletRuntime,
    wallet_client: WalletClient,
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    source = MongoLegacySource(mongo_database, in_place=["wallets"])
    sender = WalletCommandSender(wallet_client, in_flight=1)

    # The first run stops once ivy's available credit has applied: the ledger's BTC wallet of ivy
    # has replaced her legacy document, her locked and savings credits were never sent.
    with pytest.raises(Stopped):
        await migrate([MAPPING], source, wallet_runtime.store, StopsAfter(sender, 1))
    assert await balances_of(wallet_runtime, "old-ivy") == {
        "BTC": (Decimal("1.5"), Decimal(0), Decimal(0))
    }
    replaced = await mongo_database["wallets"].find_one({"_id": IVY_DOCUMENT})
    assert replaced is not None
    assert "version" in replaced  # the ledger's wallet now
    # Verify names what is still waiting: ivy's buckets not yet in (from her copy), joe's document.
    assert [str(d) for d in await verify(wallet_runtime.store)] == [
        "wallet old-joe/ETH: shape expected a ledger wallet (run wallet migrate), found a legacy"
        " document (available_balance 3.0, locked_balance 1.0, total_balance 4.0)",
        "wallet old-ivy/BTC: legacy copy expected brought in (run wallet migrate), found locked"
        " 0.25, savings 0.125 not migrated from wallets_legacy_snapshot (available_balance 1.5,"
        " locked_balance 0.25, savings_balance 0.125, total_balance 1.875)",
    ]

    # A dry run now still plans ivy's every bucket (from the copy kept before the first send).
    dry = await migrate([MAPPING], source, wallet_runtime.store, None, dry_run=True)
    assert len(dry.plan.lines) == 5

    report = await migrate([MAPPING], source, wallet_runtime.store, sender)
    summary = report.to_json()
    assert summary["pre"]["collections"] == {"wallets": {"records": 2}}
    assert summary["pre"]["totals"] == {
        "BTC": {"available": "1.5", "locked": "0.25", "savings": "0.125"},
        "ETH": {"available": "3", "locked": "1", "savings": "0"},
    }
    assert summary["transactions"]["planned"] == 5
    assert summary["transactions"]["already_applied"] == 1
    assert summary["transactions"]["applied"] == 4
    assert report.match is True, summary
    assert await balances_of(wallet_runtime, "old-ivy") == {
        "BTC": (Decimal("1.5"), Decimal("0.25"), Decimal("0.125"))
    }
    assert await balances_of(wallet_runtime, "old-joe") == {
        "ETH": (Decimal("3"), Decimal("1"), Decimal(0))
    }

    # And once more: nothing moves, the report still compares the full legacy amounts.
    again = await migrate([MAPPING], source, wallet_runtime.store, sender)
    assert again.match is True
    assert again.to_json()["transactions"]["already_applied"] == 5
    assert again.to_json()["pre"]["totals"] == summary["pre"]["totals"]
    assert await wallet_runtime.store.legacy_wallets() == []
    assert await verify(wallet_runtime.store) == []
