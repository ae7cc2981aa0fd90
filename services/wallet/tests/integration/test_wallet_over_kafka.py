"""The wallet service over the real (embedded) broker and MongoDB, driven through WalletClient
exactly as the seed's technical notes call it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.http import make_token
from shared.messaging import CommandResult, DeadLetter
from shared.messaging.topics import Topics
from shared.wallet_client import WalletClient
from wallet.application.reconciliation import verify
from wallet.bootstrap import WalletRuntime, build_http_app

pytestmark = pytest.mark.integration


def balances(result: CommandResult | None, user: str, currency: str = "BTC") -> tuple[D, D, D]:
    assert result is not None
    (snapshot,) = [b for b in result.balances if b.user_id == user and b.currency == currency]
    return snapshot.available_balance, snapshot.locked_balance, snapshot.total_balance


@pytest_asyncio.fixture(loop_scope="session")
async def http(wallet_runtime: WalletRuntime) -> AsyncIterator[httpx.AsyncClient]:
    app = build_http_app(wallet_runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as client:
        yield client


def bearer(runtime: WalletRuntime, user: str, *roles: str) -> dict[str, str]:
    token = make_token(runtime.settings.auth_jwt_secret, user, roles)
    return {"Authorization": f"Bearer {token}"}


async def test_the_seed_wallet_api_over_kafka(
    wallet_client: WalletClient, wallet_runtime: WalletRuntime, http: httpx.AsyncClient
) -> None:
    wallet = wallet_client
    opening = await wallet.credit(
        user_id="user123",
        currency="BTC",
        amount="1.5",
        transaction_type="deposit_nowpayments",
        reference_id="payment_opening",
    )
    assert balances(opening, "user123") == (D("1.5"), D(0), D("1.5"))

    result = await wallet.credit(
        user_id="user123",
        currency="BTC",
        amount="0.01",
        transaction_type="deposit_nowpayments",
        reference_id="payment_12345",
        metadata={"order_id": "order-1"},
    )
    assert result is not None
    assert (result.status, result.reason) == ("applied", None)
    assert balances(result, "user123") == (D("1.51"), D(0), D("1.51"))

    result = await wallet.debit(
        user_id="user123",
        currency="BTC",
        amount="0.005",
        transaction_type="withdrawal",
        reference_id="withdrawal_67890",
        metadata={"address": "1A1z...", "fee": "0.0001"},
    )
    assert balances(result, "user123") == (D("1.505"), D(0), D("1.505"))

    result = await wallet.lock_balance(
        user_id="user123",
        currency="BTC",
        amount="0.05",
        lock_type="p2p_escrow",
        reference_id="trade_abc123",
    )
    assert balances(result, "user123") == (D("1.455"), D("0.05"), D("1.505"))

    result = await wallet.unlock_balance(
        user_id="user123",
        currency="BTC",
        amount="0.05",
        unlock_type="p2p_cancelled",
        reference_id="trade_abc123",
    )
    assert balances(result, "user123") == (D("1.505"), D(0), D("1.505"))

    await wallet.lock_balance(
        user_id="user123",
        currency="BTC",
        amount="0.05",
        lock_type="p2p_escrow",
        reference_id="trade_xyz789",
    )
    result = await wallet.release_locked_balance(
        user_id="user123",
        currency="BTC",
        amount="0.05",
        release_type="p2p_completed",
        reference_id="trade_xyz789",
    )
    assert balances(result, "user123") == (D("1.455"), D(0), D("1.455"))

    result = await wallet.transfer(
        from_user="user123",
        to_user="user456",
        currency="BTC",
        amount="0.01",
        transfer_type="p2p_payment",
        reference_id="trade_abc123",
    )
    assert balances(result, "user123") == (D("1.445"), D(0), D("1.445"))
    assert balances(result, "user456") == (D("0.01"), D(0), D("0.01"))

    response = await http.get(
        "/api/wallets/balances/user123", headers=bearer(wallet_runtime, "user123")
    )
    assert response.status_code == 200
    (btc,) = response.json()["balances"]
    assert {
        k: btc[k] for k in ("currency", "available_balance", "locked_balance", "total_balance")
    } == {
        "currency": "BTC",
        "available_balance": "1.445",
        "locked_balance": "0",
        "total_balance": "1.445",
    }

    response = await http.get(
        "/api/wallets/transactions/user123?limit=3", headers=bearer(wallet_runtime, "user123")
    )
    page = response.json()
    assert [(i["direction"], i["amount"], i["balance_after"]) for i in page["items"]] == [
        ("debit", "0.01", "1.445"),
        ("release", "0.05", "1.455"),
        ("lock", "0.05", "1.455"),
    ]
    response = await http.get(
        f"/api/wallets/transactions/user123?limit=10&cursor={page['next_cursor']}",
        headers=bearer(wallet_runtime, "user123"),
    )
    rest = response.json()
    assert [(i["direction"], i["transaction_type"], i["balance_after"]) for i in rest["items"]] == [
        ("unlock", "p2p_cancelled", "1.505"),
        ("lock", "p2p_escrow", "1.455"),
        ("debit", "withdrawal", "1.505"),
        ("credit", "deposit_nowpayments", "1.51"),
        ("credit", "deposit_nowpayments", "1.5"),
    ]
    assert rest["next_cursor"] is None
    assert rest["items"][3]["metadata"] == {"order_id": "order-1"}

    forbidden = await http.get(
        "/api/wallets/balances/user123", headers=bearer(wallet_runtime, "user456")
    )
    assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "forbidden")
    admin = await http.get(
        "/api/wallets/balances/user123", headers=bearer(wallet_runtime, "ops", "admin")
    )
    assert admin.status_code == 200
    assert await verify(wallet_runtime.store) == []


async def test_duplicates_conflicts_and_over_debits(
    wallet_client: WalletClient, wallet_runtime: WalletRuntime
) -> None:
    statuses = []
    for _ in range(5):
        result = await wallet_client.credit(
            user_id="dup-user",
            currency="ETH",
            amount="0.123456789012345678",
            transaction_type="deposit_nowpayments",
            reference_id="payment_dup",
        )
        assert result is not None
        statuses.append(result.status)
        assert balances(result, "dup-user", "ETH")[0] == D("0.123456789012345678")
    assert statuses == ["applied"] + ["duplicate"] * 4

    conflict = await wallet_client.credit(
        user_id="dup-user",
        currency="ETH",
        amount="1",
        transaction_type="deposit_nowpayments",
        reference_id="payment_dup",
    )
    assert conflict is not None
    assert (conflict.status, conflict.reason) == ("rejected", "idempotency_conflict")

    over = await wallet_client.debit(
        user_id="dup-user",
        currency="ETH",
        amount="0.123456789012345679",
        transaction_type="withdrawal",
        reference_id="withdrawal_too_much",
    )
    assert over is not None
    assert (over.status, over.reason) == ("rejected", "insufficient_funds")
    assert balances(over, "dup-user", "ETH")[0] == D("0.123456789012345678")
    assert await verify(wallet_runtime.store) == []


async def read_topic(bootstrap: str, topic: str, count: int, within: float = 20) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        values: list[bytes] = []
        async with asyncio.timeout(within):
            while len(values) < count:
                batches = await consumer.getmany(timeout_ms=200)
                values.extend(r.value for records in batches.values() for r in records if r.value)
        return values
    finally:
        await consumer.stop()


BAD_COMMANDS: list[tuple[bytes, str]] = [
    (b"{not json", "malformed_json"),
    (b'{"type": "mint", "command_id": "c-mint", "user_id": "bad-user"}', "unknown_type"),
]


def bad_amount(amount: Any, command_id: str) -> bytes:
    return json.dumps(
        {
            "command_id": command_id,
            "type": "credit",
            "reference_id": f"ref-{command_id}",
            "transaction_type": "deposit_nowpayments",
            "user_id": "bad-user",
            "currency": "BTC",
            "amount": amount,
        }
    ).encode()


async def test_bad_messages_are_dead_lettered_and_move_no_money(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    wallet_client: WalletClient,
    wallet_runtime: WalletRuntime,
) -> None:
    amounts = [
        ("NaN", "c-nan"),
        ("1E+9999", "c-huge"),
        ("-1", "c-neg"),
        ("0.000000001", "c-precise"),
        (0.5, "c-number"),
    ]
    messages = BAD_COMMANDS + [(bad_amount(a, c), "invalid_amount") for a, c in amounts]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    try:
        for value, _ in messages:
            await producer.send_and_wait(kafka_topics.commands, value, key=b"bad-user")
    finally:
        await producer.stop()
    # A good command after the bad ones is still applied: poison never blocks the partition.
    after = await wallet_client.credit(
        user_id="bad-user",
        currency="BTC",
        amount="0.1",
        transaction_type="deposit_nowpayments",
        reference_id="after-poison",
    )
    assert after is not None
    assert after.status == "applied"
    assert balances(after, "bad-user") == (D("0.1"), D(0), D("0.1"))

    letters = [
        DeadLetter.model_validate_json(v)
        for v in await read_topic(kafka_bootstrap_servers, kafka_topics.dead_letters, len(messages))
    ]
    assert sorted(d.reason for d in letters) == sorted(reason for _, reason in messages)
    by_raw = {d.raw_value: d for d in letters}
    nan = by_raw[bad_amount("NaN", "c-nan").decode()]
    assert nan.detail.startswith("amount_not_a_number")
    assert nan.source_topic == kafka_topics.commands
    assert nan.key == "bad-user"
    assert nan.source_offset >= 0
    details = sorted(d.detail.split(":")[0] for d in letters if d.reason == "invalid_amount")
    assert details == sorted(
        [
            "amount_not_a_number",
            "amount_too_large",
            "amount_not_positive",
            "amount_too_precise",
            "amount_not_a_string",
        ]
    )
    assert await verify(wallet_runtime.store) == []


async def test_metrics_count_what_the_consumer_did(http: httpx.AsyncClient) -> None:
    text = (await http.get("/metrics")).text
    counts = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("wallet_commands_total{")
    }
    # The tests above applied, repeated, refused and dead-lettered commands.
    for status in ("applied", "duplicate", "rejected", "dead_lettered"):
        assert counts[f'wallet_commands_total{{status="{status}"}}'] > 0, status
    assert "wallet_batch_seconds_count" in text


async def test_a_spot_fill_settles_and_an_uncovered_swap_is_refused_over_kafka(
    wallet_client: WalletClient, wallet_runtime: WalletRuntime
) -> None:
    wallet = wallet_client
    for user, currency, amount in (("k-buyer", "USDT", "1000"), ("k-seller", "BTC", "0.02")):
        await wallet.credit(
            user_id=user,
            currency=currency,
            amount=amount,
            transaction_type="deposit_nowpayments",
            reference_id=f"{user}-deposit",
        )
        locked = await wallet.lock_balance(
            user_id=user,
            currency=currency,
            amount=amount,
            lock_type="spot_order",
            reference_id=f"{user}-order:lock",
            hold_id=f"{user}-order",
        )
        assert locked is not None
        assert locked.status == "applied", locked

    fill = await wallet.settle_trade(
        buyer_id="k-buyer",
        seller_id="k-seller",
        quote_currency="USDT",
        quote_amount="500",
        buyer_hold_id="k-buyer-order",
        base_currency="BTC",
        base_amount="0.01",
        seller_hold_id="k-seller-order",
        seller_fee="0.5",
        buyer_fee="0.00001",
        reference_id="k-fill-1",
    )
    assert fill is not None
    assert (fill.status, fill.reason) == ("applied", None)
    assert balances(fill, "k-buyer", "USDT") == (D(0), D(500), D(500))
    assert balances(fill, "k-buyer", "BTC") == (D("0.00999"), D(0), D("0.00999"))
    assert balances(fill, "k-seller", "USDT") == (D("499.5"), D(0), D("499.5"))
    assert balances(fill, "k-seller", "BTC") == (D(0), D("0.01"), D("0.01"))

    # Nobody funded ETH liquidity in this module: the swap is refused and moves nothing.
    refused = await wallet.exchange(
        user_id="k-seller",
        pay_currency="USDT",
        pay_amount="100",
        receive_currency="ETH",
        receive_amount="0.03",
        exchange_type="swap",
        reference_id="k-swap-1",
    )
    assert refused is not None
    assert (refused.status, refused.reason) == ("rejected", "insufficient_liquidity")
    assert balances(refused, "k-seller", "USDT") == (D("499.5"), D(0), D("499.5"))
    accounts = await wallet_runtime.store.account_balances()
    assert accounts[("platform:fees", "USDT")] == D("0.5")
    assert ("platform:liquidity", "ETH") not in accounts
    assert await verify(wallet_runtime.store) == []
