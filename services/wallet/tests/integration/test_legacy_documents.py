"""Documents in the seed's old `wallets` shape (float balances, no ledger fields) never break the
wallet: reads answer, commands apply (never a dead letter), verify lists them (and the copy of one a
command replaced, until migrate brings it in), replay refuses to drop them, and `wallet migrate`
over the `wallets` collection itself brings them into the ledger.
The seed's own `wallet_transactions` rows (float amounts, no ledger fields) are not the ledger's
history: reads, balances at an instant and verify leave them out, and replay keeps them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
from bson import Decimal128, ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import make_token
from shared.wallet_client import WalletClient
from wallet.adapters.legacy_source import MongoLegacySource
from wallet.application.migration import WalletCommandSender, migrate
from wallet.application.reconciliation import ReplayRefused, replay, verify
from wallet.bootstrap import WalletRuntime, build_http_app
from wallet.domain.migration import CollectionMapping

ALICE_DOCUMENT = ObjectId("65f0000000000000000000a1")
SEED_TIME = datetime(2025, 11, 26, 15, 45, tzinfo=UTC)


def seed_wallet(user_id: str, currency: str, available: float, locked: float) -> dict[str, Any]:
    """A wallets document as the seed's wallet_service wrote it."""
    return {
        "user_id": user_id,
        "currency": currency,
        "available_balance": available,
        "locked_balance": locked,
        "total_balance": available + locked,
        "created_at": SEED_TIME,
        "last_updated": SEED_TIME,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def legacy_wallets(mongo_database: AsyncDatabase[dict[str, Any]]) -> list[str]:
    await mongo_database["wallets"].insert_many(
        [
            {"_id": ALICE_DOCUMENT, **seed_wallet("old-alice", "BTC", 1.5, 0.5)},
            seed_wallet("old-bob", "ETH", 0.25, 0.0),
        ]
    )
    return ["old-alice", "old-bob"]


def seed_history_row(user_id: str, amount: float, balance_after: float) -> dict[str, Any]:
    """A wallet_transactions document as the seed's wallet_service wrote it."""
    return {
        "transaction_id": str(uuid.uuid4()),
        "user_id": user_id,
        "currency": "BTC",
        "amount": amount,
        "transaction_type": "deposit_nowpayments",
        "direction": "credit",
        "reference_id": f"payment-{uuid.uuid4().hex[:8]}",
        "balance_after": balance_after,
        "metadata": {"order_id": "o-1"},
        "timestamp": SEED_TIME,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seed_history(mongo_database: AsyncDatabase[dict[str, Any]]) -> int:
    rows = [seed_history_row("old-alice", 1.5, 1.5), seed_history_row("old-alice", 0.5, 2.0)]
    await mongo_database["wallet_transactions"].insert_many(rows)
    return len(rows)


@pytest_asyncio.fixture(loop_scope="session")
async def http(wallet_runtime: WalletRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_http_app(wallet_runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as client:
        yield client


def auth(runtime: WalletRuntime, user: str, *roles: str) -> dict[str, str]:
    token = make_token(runtime.settings.auth_jwt_secret, user, roles)
    return {"Authorization": f"Bearer {token}"}


async def test_reads_answer_with_legacy_documents_present(
    legacy_wallets: list[str], wallet_runtime: WalletRuntime, http: httpx.AsyncClient
) -> None:
    for user in legacy_wallets:
        response = await http.get(
            f"/api/wallets/balances/{user}", headers=auth(wallet_runtime, user)
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"user_id": user, "balances": []}
    portfolio = await http.get(
        "/api/wallets/portfolio/old-alice", headers=auth(wallet_runtime, "old-alice")
    )
    assert portfolio.status_code == 200, portfolio.text
    accounts = await http.get(
        "/api/wallets/platform-balances", headers=auth(wallet_runtime, "ops", "admin")
    )
    assert accounts.status_code == 200, accounts.text


async def test_the_seeds_history_rows_are_left_out_of_every_read(
    legacy_wallets: list[str],
    seed_history: int,
    wallet_runtime: WalletRuntime,
    http: httpx.AsyncClient,
) -> None:
    headers = auth(wallet_runtime, "old-alice")
    history = await http.get("/api/wallets/transactions/old-alice", headers=headers)
    assert history.status_code == 200, history.text
    assert history.json() == {"items": [], "next_cursor": None}
    for query in ("?currency=BTC", "?reference_id=payment-1", "?limit=1"):
        response = await http.get(f"/api/wallets/transactions/old-alice{query}", headers=headers)
        assert response.status_code == 200, response.text
    at = await http.get(
        "/api/wallets/balances/old-alice",
        params={"at": "2030-01-01T00:00:00+00:00"},
        headers=headers,
    )
    assert at.status_code == 200, at.text
    assert at.json() == {"user_id": "old-alice", "balances": []}
    assert [row async for row in wallet_runtime.store.all_history()] == []


async def test_verify_lists_them_and_replay_refuses_to_drop_them(
    legacy_wallets: list[str],
    wallet_runtime: WalletRuntime,
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    differences = [str(d) for d in await verify(wallet_runtime.store)]
    assert differences == [
        "wallet old-alice/BTC: shape expected a ledger wallet (run wallet migrate), found a legacy"
        " document (available_balance 1.5, locked_balance 0.5, total_balance 2.0)",
        "wallet old-bob/ETH: shape expected a ledger wallet (run wallet migrate), found a legacy"
        " document (available_balance 0.25, locked_balance 0.0, total_balance 0.25)",
    ]
    with pytest.raises(ReplayRefused, match="old-alice/BTC"):
        await replay(wallet_runtime.store)
    assert await mongo_database["wallets"].count_documents({}) == 2


async def test_a_command_to_a_legacy_wallet_applies_and_replaces_the_document(
    legacy_wallets: list[str],
    wallet_runtime: WalletRuntime,
    wallet_client: WalletClient,
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    legacy_bob = await mongo_database["wallets"].find_one({"user_id": "old-bob"})
    result = await wallet_client.credit(
        user_id="old-bob",
        currency="ETH",
        amount="0.1",
        transaction_type="deposit_nowpayments",
        reference_id="payment-old-bob",
    )
    assert result is not None
    assert (result.status, result.reason) == ("applied", None)
    [wallet] = await wallet_runtime.store.wallets_of("old-bob")
    assert wallet.balances.available == Decimal("0.1")
    assert [w.wallet.user_id for w in await wallet_runtime.store.legacy_wallets()] == ["old-alice"]
    # Its balances are not erased: the document as it was is kept for `wallet migrate`.
    kept = await mongo_database["wallets_legacy_snapshot"].find({}).to_list()
    assert kept == [legacy_bob]


async def test_verify_lists_the_kept_copy_until_migrate_brings_it_in(
    legacy_wallets: list[str], wallet_runtime: WalletRuntime
) -> None:
    # Bob's legacy 0.25 ETH is no longer in wallets, only in its copy: money waiting for migrate.
    differences = [str(d) for d in await verify(wallet_runtime.store)]
    assert differences == [
        "wallet old-alice/BTC: shape expected a ledger wallet (run wallet migrate), found a legacy"
        " document (available_balance 1.5, locked_balance 0.5, total_balance 2.0)",
        "wallet old-bob/ETH: legacy copy expected brought in (run wallet migrate), found available"
        " 0.25 not migrated from wallets_legacy_snapshot (available_balance 0.25, locked_balance"
        " 0.0, total_balance 0.25)",
    ]


async def test_migrate_over_the_wallets_collection_brings_the_rest_in(
    legacy_wallets: list[str],
    seed_history: int,
    wallet_runtime: WalletRuntime,
    wallet_client: WalletClient,
    mongo_database: AsyncDatabase[dict[str, Any]],
    http: httpx.AsyncClient,
) -> None:
    mapping = CollectionMapping(
        "wallets",
        "user_id",
        "currency",
        available_field="available_balance",
        locked_field="locked_balance",
    )
    source = MongoLegacySource(mongo_database, in_place=["wallets"])
    sender = WalletCommandSender(wallet_client)
    report = await migrate([mapping], source, wallet_runtime.store, sender)
    # Bob's legacy 0.25 ETH comes in from the copy kept when his deposit replaced the document:
    # he holds both, and the report shows the deposit that moved before the migration.
    assert report.to_json()["pre"]["collections"] == {"wallets": {"records": 2}}
    assert report.match is False
    assert report.differences == ["old-bob ETH available: legacy 0.25, ledger 0.35"]
    [bob] = await wallet_runtime.store.wallets_of("old-bob")
    assert bob.balances.available == Decimal("0.35")
    [alice] = await wallet_runtime.store.wallets_of("old-alice")
    assert (alice.balances.available, alice.balances.locked) == (Decimal("1.5"), Decimal("0.5"))
    assert dict(alice.holds) == {f"legacy:wallets:{ALICE_DOCUMENT}": Decimal("0.5")}
    assert await wallet_runtime.store.legacy_wallets() == []
    assert await verify(wallet_runtime.store) == []
    await replay(wallet_runtime.store)  # every balance now has events behind it
    assert await verify(wallet_runtime.store) == []
    # Alice's history is the ledger's: her opening credits, not the seed's rows of the same wallet.
    headers = auth(wallet_runtime, "old-alice")
    history = (await http.get("/api/wallets/transactions/old-alice", headers=headers)).json()
    assert sorted(row["transaction_type"] for row in history["items"]) == [
        "legacy_migration",
        "legacy_migration_locked",
    ]
    before_migration = await http.get(
        "/api/wallets/balances/old-alice",
        params={"at": (SEED_TIME + timedelta(days=1)).isoformat()},
        headers=headers,
    )
    assert before_migration.status_code == 200, before_migration.text
    assert before_migration.json()["balances"] == []
    # The seed's history rows are still there, never shown.
    assert (
        await mongo_database["wallet_transactions"].count_documents(
            {"ledger_transaction_id": {"$exists": False}}
        )
        == seed_history
    )


async def test_an_empty_legacy_wallet_is_no_difference_and_replay_does_not_wait_for_it(
    legacy_wallets: list[str],
    wallet_runtime: WalletRuntime,
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    # The seed kept wallets it had emptied (or made at 0): nothing to migrate, nothing to keep.
    await mongo_database["wallets"].insert_many(
        [
            seed_wallet("old-carol", "ETH", 0.0, 0.0),
            {"user_id": "old-dan", "currency": "BTC"},
            {"user_id": "old-gus", "currency": "USDT", "available_balance": Decimal128("0E-6")},
        ]
    )
    assert await verify(wallet_runtime.store) == []
    await replay(wallet_runtime.store)
    assert await verify(wallet_runtime.store) == []
    assert await wallet_runtime.store.wallets_of("old-carol") == []

    # One that holds money, or whose amounts cannot be read, still counts.
    await mongo_database["wallets"].insert_many(
        [seed_wallet("old-erin", "ETH", 0.0, 0.1), {**seed_wallet("old-finn", "BTC", 0, 0),
                                                    "available_balance": "abc"}]
    )  # fmt: skip
    # Money in savings only (the seed's wallets have no such field, a mapping may name one).
    await mongo_database["wallets"].insert_one(
        {**seed_wallet("old-hana", "USDT", 0.0, 0.0), "savings_balance": 12.5}
    )
    differences = [str(d) for d in await verify(wallet_runtime.store)]
    assert [d.split(":")[0] for d in differences] == [
        "wallet old-erin/ETH",
        "wallet old-finn/BTC",
        "wallet old-hana/USDT",
    ]
    assert "savings_balance 12.5" in differences[2]
    with pytest.raises(ReplayRefused, match="old-erin/ETH"):
        await replay(wallet_runtime.store)
    await mongo_database["wallets"].delete_many({"user_id": {"$in": ["old-erin", "old-finn"]}})
    with pytest.raises(ReplayRefused, match="old-hana/USDT"):
        await replay(wallet_runtime.store)
    assert await mongo_database["wallets"].count_documents({"user_id": "old-hana"}) == 1
