"""A real `wallet migrate` over the `wallets` collection of the wallet's own database, SIGKILLed
while it sends its opening credits (one in flight, killed just after a document's first credit
applied, so that document is half migrated and already replaced by the ledger's wallet), then run
again to the end: every bucket of every legacy document arrives exactly once, and the report
compares the full legacy amounts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging.topics import Topics
from wallet.application.reconciliation import verify
from wallet.bootstrap import WalletRuntime

DOCUMENTS = 40
BUCKETS = 3  # available, locked and savings of every document
MAPPING = """
[[collection]]
name = "wallets"
user_field = "user_id"
currency_field = "currency"
available_field = "available_balance"
locked_field = "locked_balance"
savings_field = "savings_balance"
"""


def legacy(n: int) -> dict[str, Any]:
    return {
        "_id": f"w{n:03d}",
        "user_id": f"crash-u{n:03d}",
        "currency": "BTC",
        "available_balance": 1 + n / 4,
        "locked_balance": 0.5,
        "savings_balance": n / 8 + 0.125,
    }


def expected(n: int) -> tuple[Decimal, Decimal, Decimal]:
    document = legacy(n)
    return tuple(  # type: ignore[return-value]
        Decimal(repr(float(document[f])))
        for f in ("available_balance", "locked_balance", "savings_balance")
    )


async def opening_credits(database: AsyncDatabase[dict[str, Any]]) -> int:
    return await database["wallet_transactions"].count_documents(
        {"transaction_type": {"$regex": "^legacy_migration"}}
    )


async def settled(database: AsyncDatabase[dict[str, Any]]) -> int:
    """The count of applied opening credits once it stops moving (a credit the killed run had
    already sent still applies)."""
    last, still = -1, 0
    while still < 10:
        await asyncio.sleep(0.1)
        count = await opening_credits(database)
        still = still + 1 if count == last else 0
        last = count
    return last


async def test_a_migration_killed_part_way_and_run_again_brings_every_bucket_in_once(
    tmp_path: Path,
    mongodb_url: str,
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongo_database: AsyncDatabase[dict[str, Any]],
    wallet_runtime: WalletRuntime,
) -> None:
    await mongo_database["wallets"].insert_many([legacy(n) for n in range(DOCUMENTS)])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "wallet.entrypoints.cli",
        "migrate",
        "--source-url",
        mongodb_url,
        "--source-db",
        mongo_database.name,  # the wallet's own: `wallets` is migrated in place
        "--mapping",
        str(mapping),
        "--report",
        str(report),
    ]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka_topics.prefix,
        "MONGODB_URL": mongodb_url,
        "WALLET_MONGODB_DATABASE": mongo_database.name,
        "LOG_LEVEL": "WARNING",
    }

    # Kill runs until one stops with a document half migrated (its count of applied credits is not
    # a multiple of the buckets), each time as soon as a document's first credit has applied.
    half_migrated = False
    for _ in range(5):
        errors = tmp_path / "killed.err"
        with errors.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                *command, "--in-flight", "1", env=env, stdout=subprocess.DEVNULL, stderr=sink
            )
            try:
                start = await opening_credits(mongo_database)
                async with asyncio.timeout(60):
                    while True:
                        count = await opening_credits(mongo_database)
                        if count > start and count % BUCKETS == 1:
                            break
                        assert process.returncode is None, errors.read_text()
                        await asyncio.sleep(0.002)
                os.kill(process.pid, signal.SIGKILL)
                assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        applied = await settled(mongo_database)
        assert 0 < applied < DOCUMENTS * BUCKETS
        if applied % BUCKETS:
            half_migrated = True
            break
    assert half_migrated, "no run was killed with a document half migrated"
    # The half migrated document is the ledger's wallet now: its legacy shape is gone from `wallets`.
    assert await mongo_database["wallets"].count_documents({"version": {"$exists": False}}) < (
        DOCUMENTS - applied // BUCKETS
    )

    # The wallet runs in this event loop: wait for the rerun without blocking it.
    rerun = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(rerun.communicate(), 180)
    assert rerun.returncode == 0, out.decode() + err.decode()
    assert "match: yes" in out.decode()
    summary = json.loads(report.read_text())
    assert summary["match"] is True
    assert summary["pre"]["collections"] == {"wallets": {"records": DOCUMENTS}}
    assert summary["transactions"]["planned"] == DOCUMENTS * BUCKETS
    assert summary["transactions"]["already_applied"] == applied
    assert summary["transactions"]["applied"] == DOCUMENTS * BUCKETS - applied
    total = [sum((expected(n)[i] for n in range(DOCUMENTS)), Decimal(0)) for i in range(3)]
    assert {b: Decimal(v) for b, v in summary["pre"]["totals"]["BTC"].items()} == dict(
        zip(("available", "locked", "savings"), total, strict=True)
    )
    assert summary["post"]["totals"] == summary["pre"]["totals"]

    for n in range(DOCUMENTS):
        [wallet] = await wallet_runtime.store.wallets_of(f"crash-u{n:03d}")
        b = wallet.balances
        assert (b.available, b.locked, b.savings) == expected(n), n
    assert await opening_credits(mongo_database) == DOCUMENTS * BUCKETS
    assert await wallet_runtime.store.legacy_wallets() == []
    assert await verify(wallet_runtime.store) == []
