"""`wallet migrate` end to end: legacy collections of awkward shapes → wallet.commands → the running
wallet (embedded Kafka and MongoDB) → exact balances, a matching report, a rerun that changes
nothing, legacy data untouched, verify clean."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bson import ObjectId
from bson.decimal128 import Decimal128
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging.topics import Topics
from shared.testing.fixtures import unique_database_name
from shared.wallet_client import WalletClient
from wallet.application.reconciliation import verify
from wallet.bootstrap import WalletRuntime

CRYPTO_ID = ObjectId("65f000000000000000000001")

MAPPING = """
[[collection]]
name = "crypto_balances"
user_field = "user_id"
currency_field = "coin"
available_field = "balance"
locked_field = "locked"

[[collection]]
name = "internal_balances"
user_field = "uid"
currency_field = "currency"
available_field = "available"
locked_field = "frozen"

[[collection]]
name = "savings_balances"
user_field = "user"
currency_field = "asset"
savings_field = "savings"

[[collection]]
name = "trader_balances"
user_field = "owner.id"
currency_field = "ccy"
available_field = "free"
locked_field = "held"
"""

LEGACY: dict[str, list[dict[str, Any]]] = {
    "crypto_balances": [
        # float noise (0.1 + 0.2) and more decimals than BTC holds: rounded and listed
        {
            "_id": CRYPTO_ID,
            "user_id": "mig-u1",
            "coin": "btc",
            "balance": 0.1 + 0.2,
            "locked": "0.5",
        },
        {
            "_id": "c2",
            "user_id": "mig-u2",
            "coin": "ETH",
            "balance": Decimal128("1.123456789012345678"),
            "locked": None,
        },
        {"_id": "c3", "user_id": "mig-u3", "coin": "BTC", "balance": 0, "locked": 0.0},
        # invalid: unknown coin, missing user, negative
        {"_id": "bad-coin", "user_id": "mig-u9", "coin": "DOGE", "balance": 1},
        {"_id": "bad-user", "user_id": None, "coin": "btc", "balance": 1},
        {"_id": "bad-negative", "user_id": "mig-u8", "coin": "btc", "balance": -1.5},
    ],
    "internal_balances": [
        {"_id": 1, "uid": "mig-u1", "currency": "USDT", "available": 100, "frozen": 0},
        {"_id": 2, "uid": "mig-u1", "currency": "btc", "available": "0.25"},
    ],
    "savings_balances": [
        {"_id": "s1", "user": "mig-u3", "asset": "usdttrc20", "savings": "25.5"},
    ],
    "trader_balances": [
        {"_id": "t1", "owner": {"id": "mig-u2"}, "ccy": "gbp", "free": "10.00", "held": 1.25},
    ],
}

# What the valid rows add up to, per user and currency: (available, locked, savings).
EXPECTED = {
    ("mig-u1", "BTC"): ("0.55", "0.5", "0"),  # 0.30000000000000004 → 0.3, plus 0.25
    ("mig-u1", "USDT"): ("100", "0", "0"),
    ("mig-u2", "ETH"): ("1.123456789012345678", "0", "0"),
    ("mig-u2", "GBP"): ("10", "1.25", "0"),
    ("mig-u3", "USDT"): ("0", "0", "25.5"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def legacy_database(
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    database = mongo_client[unique_database_name("legacy")]
    for name, documents in LEGACY.items():
        await database[name].insert_many(copy.deepcopy(documents))
    try:
        yield database
    finally:
        await mongo_client.drop_database(database.name)


async def legacy_snapshot(database: AsyncDatabase[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: await database[name].find({}).sort("_id", 1).to_list() for name in LEGACY}


def migrate_command(
    tmp_path: Path,
    mongodb_url: str,
    legacy: AsyncDatabase[dict[str, Any]],
    *extra: str,
    mapping_text: str = MAPPING,
) -> list[str]:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(mapping_text)
    return [
        sys.executable,
        "-m",
        "wallet.entrypoints.cli",
        "migrate",
        "--source-url",
        mongodb_url,
        "--source-db",
        legacy.name,
        "--mapping",
        str(mapping),
        "--report",
        str(tmp_path / "report.json"),
        *extra,
    ]


async def run_cli(
    command: list[str], env: dict[str, str], within: float = 120
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def ledger_env(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka_topics.prefix,
        "MONGODB_URL": mongodb_url,
        "WALLET_MONGODB_DATABASE": mongo_database.name,
        "LOG_LEVEL": "WARNING",
    }


async def balances(runtime: WalletRuntime, user: str) -> dict[str, tuple[str, str, str]]:
    from shared.money import format_amount

    return {
        w.currency: (
            format_amount(w.balances.available),
            format_amount(w.balances.locked),
            format_amount(w.balances.savings),
        )
        for w in await runtime.store.wallets_of(user)
    }


async def all_balances(runtime: WalletRuntime) -> dict[tuple[str, str], tuple[str, str, str]]:
    found = {}
    for user in ("mig-u1", "mig-u2", "mig-u3", "mig-u8", "mig-u9"):
        for currency, values in (await balances(runtime, user)).items():
            found[(user, currency)] = values
    return found


async def test_invalid_rows_block_the_migration_and_nothing_is_written(
    tmp_path: Path,
    mongodb_url: str,
    legacy_database: AsyncDatabase[dict[str, Any]],
    ledger_env: dict[str, str],
    wallet_runtime: WalletRuntime,
) -> None:
    code, out, err = await run_cli(
        migrate_command(tmp_path, mongodb_url, legacy_database), ledger_env
    )
    assert code == 1, out + err
    assert "Migration blocked by invalid rows: nothing was written" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["blocked"] is True
    assert report["post"] is None
    assert sorted((row["_id"], row["reason"]) for row in report["invalid"]) == [
        ("bad-coin", "unknown_currency"),
        ("bad-negative", "negative_amount"),
        ("bad-user", "missing_user_id"),
    ]
    assert await all_balances(wallet_runtime) == {}


async def test_a_dry_run_plans_and_writes_nothing(
    tmp_path: Path,
    mongodb_url: str,
    legacy_database: AsyncDatabase[dict[str, Any]],
    ledger_env: dict[str, str],
    wallet_runtime: WalletRuntime,
) -> None:
    command = migrate_command(tmp_path, mongodb_url, legacy_database, "--dry-run", "--skip-invalid")
    code, out, err = await run_cli(command, ledger_env)
    assert code == 0, out + err
    assert "Dry run: 8 opening transactions would be sent" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dry_run"] is True
    assert report["match"] is None
    assert report["pre"]["users"] == 3
    assert await all_balances(wallet_runtime) == {}


async def test_migrate_brings_exact_balances_in_once_and_leaves_the_legacy_data_alone(
    tmp_path: Path,
    mongodb_url: str,
    legacy_database: AsyncDatabase[dict[str, Any]],
    ledger_env: dict[str, str],
    wallet_runtime: WalletRuntime,
) -> None:
    before = await legacy_snapshot(legacy_database)
    command = migrate_command(tmp_path, mongodb_url, legacy_database, "--skip-invalid")

    code, out, err = await run_cli(command, ledger_env)
    assert code == 0, out + err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["match"] is True, report
    assert report["pre"] == {
        "collections": {
            "crypto_balances": {"records": 3},
            "internal_balances": {"records": 2},
            "savings_balances": {"records": 1},
            "trader_balances": {"records": 1},
        },
        "users": 3,
        "totals": {
            "BTC": {"available": "0.55", "locked": "0.5", "savings": "0"},
            "ETH": {"available": "1.123456789012345678", "locked": "0", "savings": "0"},
            "GBP": {"available": "10", "locked": "1.25", "savings": "0"},
            "USDT": {"available": "100", "locked": "0", "savings": "25.5"},
        },
    }
    assert report["post"] == {"users": 3, "totals": report["pre"]["totals"]}
    assert report["rounded"] == [
        {
            "collection": "crypto_balances",
            "_id": str(CRYPTO_ID),
            "user_id": "mig-u1",
            "currency": "BTC",
            "field": "balance",
            "original": "0.30000000000000004",
            "migrated": "0.3",
            "difference": "-0.00000000000000004",
        }
    ]
    assert report["skipped_invalid"] is True
    assert len(report["invalid"]) == 3
    assert report["transactions"]["planned"] == report["transactions"]["applied"] == 8
    assert "Total BTC: available 0.55, locked 0.5, savings 0 (matches)" in out

    assert await all_balances(wallet_runtime) == EXPECTED
    [wallet] = [w for w in await wallet_runtime.store.wallets_of("mig-u1") if w.currency == "BTC"]
    assert dict(wallet.holds) == {f"legacy:crypto_balances:{CRYPTO_ID}": Decimal("0.5")}

    # A rerun sends the same deterministic commands: every one is a duplicate, nothing moves.
    code, out, err = await run_cli(command, ledger_env)
    assert code == 0, out + err
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["match"] is True
    assert again["transactions"]["applied"] == 0
    assert again["transactions"]["already_applied"] == 8
    assert await all_balances(wallet_runtime) == EXPECTED

    assert await legacy_snapshot(legacy_database) == before
    assert await verify(wallet_runtime.store) == []


async def test_an_admin_releases_a_legacy_hold_once(
    ledger_env: dict[str, str],
    wallet_runtime: WalletRuntime,
    wallet_client: WalletClient,
) -> None:
    hold = f"legacy:crypto_balances:{CRYPTO_ID}"
    command = [sys.executable, "-m", "wallet.entrypoints.cli", "release-legacy-hold"]
    code, out, err = await run_cli([*command, "mig-u1", "btc", hold], ledger_env)
    assert code == 0, out + err
    assert out.startswith("applied: 0.5 BTC of mig-u1")
    assert (await balances(wallet_runtime, "mig-u1"))["BTC"] == ("1.05", "0", "0")

    code, _, err = await run_cli([*command, "mig-u1", "BTC", hold], ledger_env)
    assert code == 1
    assert "has no BTC held under" in err
    assert await verify(wallet_runtime.store) == []


AWKWARD_MAPPING = """
[[collection]]
name = "crypto_balances"
user_field = "user_id"
currency_field = "coin"
available_field = "balance"

[[collection]]
name = "fiat_balances"
user_field = "user_id"
currency_field = "currency"
available_field = "balance"
"""
AMBIGUOUS_ID = ObjectId("65f000000000000000000b01")
LONG_GBP = ".005" + "1" * 60  # 64 characters, 61 significant digits: more than the ledger's 60


async def test_ids_that_read_the_same_and_digits_past_the_ledgers_are_reported(
    tmp_path: Path,
    mongodb_url: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    ledger_env: dict[str, str],
    wallet_runtime: WalletRuntime,
) -> None:
    """`1` and `"1"` (an ObjectId and its hex) made one reference: the second document's credit was
    answered as a duplicate and its balance never came in. A 61-digit amount was credited rounded,
    then its difference raised: the dry run died and the real run wrote no report."""
    legacy = mongo_client[unique_database_name("legacy")]
    await legacy["crypto_balances"].insert_many(
        [
            {"_id": 1, "user_id": "amb-u1", "coin": "btc", "balance": 1.0},
            {"_id": "1", "user_id": "amb-u1", "coin": "BTC", "balance": "1"},
            # MongoDB sorts a string before an ObjectId: the ObjectId is the one listed
            {"_id": AMBIGUOUS_ID, "user_id": "amb-u2", "coin": "ETH", "balance": "2"},
            {"_id": str(AMBIGUOUS_ID), "user_id": "amb-u2", "coin": "ETH", "balance": "3"},
        ]
    )
    await legacy["fiat_balances"].insert_one(
        {"_id": "f1", "user_id": "amb-u3", "currency": "GBP", "balance": LONG_GBP}
    )
    rounded = [
        {
            "collection": "fiat_balances",
            "_id": "f1",
            "user_id": "amb-u3",
            "currency": "GBP",
            "field": "balance",
            "original": LONG_GBP,
            "migrated": "0.01",
            "difference": "0.004" + "8" * 59 + "9",
        }
    ]
    ambiguous = [
        ("1", "amb-u1", "ambiguous_document_id"),
        (str(AMBIGUOUS_ID), "amb-u2", "ambiguous_document_id"),
    ]

    def command(*extra: str) -> list[str]:
        return migrate_command(tmp_path, mongodb_url, legacy, *extra, mapping_text=AWKWARD_MAPPING)

    async def wallets() -> dict[tuple[str, str], tuple[str, str, str]]:
        return {
            (user, currency): values
            for user in ("amb-u1", "amb-u2", "amb-u3")
            for currency, values in (await balances(wallet_runtime, user)).items()
        }

    try:
        code, out, err = await run_cli(command("--dry-run"), ledger_env)
        assert code == 1, out + err
        assert "Traceback" not in err
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["blocked"] is True
        assert [(r["_id"], r["user_id"], r["reason"]) for r in report["invalid"]] == ambiguous
        assert report["rounded"] == rounded
        assert "  - crypto_balances 1 _id: ambiguous_document_id (1)" in out
        assert await wallets() == {}

        for applied, already in ((3, 0), (0, 3)):
            code, out, err = await run_cli(command("--skip-invalid"), ledger_env)
            assert code == 0, out + err
            report = json.loads((tmp_path / "report.json").read_text())
            assert report["match"] is True, report
            assert [(r["_id"], r["user_id"], r["reason"]) for r in report["invalid"]] == ambiguous
            assert report["rounded"] == rounded
            transactions = report["transactions"]
            assert (transactions["applied"], transactions["already_applied"]) == (applied, already)
            assert await wallets() == {
                ("amb-u1", "BTC"): ("1", "0", "0"),
                ("amb-u2", "ETH"): ("3", "0", "0"),
                ("amb-u3", "GBP"): ("0.01", "0", "0"),
            }
        assert await verify(wallet_runtime.store) == []
    finally:
        await mongo_client.drop_database(legacy.name)
