"""SIGKILL the wallet process in the middle of a stream of commands; after a restart every command
is applied exactly once and every command has its outcome published."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.database import AsyncDatabase

from services.wallet.tests.integration.kafka_reading import results_so_far
from shared.infra.net import free_port, wait_until
from shared.infra.processes import ManagedProcess
from shared.messaging.topics import Topics
from wallet.adapters.mongo_store import MongoLedgerStore
from wallet.application.reconciliation import verify

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = 40
DISTINCT = 900
RESENDS = 100


def command_stream() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, D]]:
    """1,000 messages: 900 distinct commands (credits, then debits some of which over-draw) and
    100 resends of earlier ones under new command ids; and the balances exactly-once implies."""
    stream: list[tuple[str, dict[str, Any]]] = []
    expected: dict[str, D] = {f"crash-user-{u}": D(0) for u in range(USERS)}
    for i in range(DISTINCT):
        user = f"crash-user-{i % USERS}"
        round_ = i // USERS
        debit = round_ % 5 == 4
        # Every fifth round debits; in rounds 4, 14, ... the debit over-draws and is rejected.
        amount = (D("0.5") if round_ % 10 == 4 else D("0.35")) if debit else D("0.1")
        command = {
            "command_id": f"cmd-{i}",
            "type": "debit" if debit else "credit",
            "reference_id": f"crash-{i}",
            "transaction_type": "withdrawal" if debit else "deposit_nowpayments",
            "user_id": user,
            "currency": "BTC",
            "amount": str(amount),
        }
        stream.append((user, command))
        if debit:
            if expected[user] >= amount:  # over-draws are rejected, and stay rejected
                expected[user] -= amount
        else:
            expected[user] += amount
        if i % 9 == 0 and len(stream) < DISTINCT + RESENDS:
            stream.append((user, {**command, "command_id": f"cmd-{i}-resend"}))
    while len(stream) < DISTINCT + RESENDS:  # top up with resends of early commands
        user, first = stream[len(stream) % 50]
        stream.append((user, {**first, "command_id": f"{first['command_id']}-late-{len(stream)}"}))
    return stream, expected


def start_wallet(env: dict[str, str], port: int, log: Path) -> ManagedProcess:
    return ManagedProcess(
        "wallet",
        [sys.executable, "-m", "wallet"],
        env={**env, "WALLET_HTTP_PORT": str(port)},
        log_path=log,
    )


async def healthy(port: int) -> bool:
    async with httpx.AsyncClient(timeout=1) as client:
        try:
            return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False


async def test_sigkill_mid_stream_then_restart_applies_everything_exactly_once(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka_topics.prefix,
        "MONGODB_URL": mongodb_url,
        "WALLET_MONGODB_DATABASE": mongo_database.name,
        "WALLET_BATCH_MAX_RECORDS": "100",
        "WALLET_CONSUMER_SESSION_TIMEOUT_MS": "3000",
        "WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
    }
    stream, expected = command_stream()
    port = free_port()
    wallet = start_wallet(env, port, tmp_path / "wallet-1.log")
    await wait_until(
        "wallet healthy", lambda: healthy(port), within=60, diagnostics=wallet.log_tail
    )

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        sends = [
            await producer.send(kafka_topics.commands, json.dumps(c).encode(), key=user.encode())
            for user, c in stream
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    async def some_results() -> bool:
        return len(await results_so_far(kafka_bootstrap_servers, kafka_topics.results)) >= 150

    await wait_until("first results", some_results, within=120, diagnostics=wallet.log_tail)
    os.killpg(wallet.pid, signal.SIGKILL)  # no shutdown: mid-batch, offsets not committed
    wallet.popen.wait(10)
    killed_at = len(await results_so_far(kafka_bootstrap_servers, kafka_topics.results))
    assert killed_at < len(stream), "the kill came after everything was done: nothing was tested"

    wallet = start_wallet(env, port, tmp_path / "wallet-2.log")
    try:
        sent_ids = {c["command_id"] for _, c in stream}

        async def all_answered() -> bool:
            seen = {
                r.command_id
                for r in await results_so_far(kafka_bootstrap_servers, kafka_topics.results)
            }
            return sent_ids <= seen

        await wait_until(
            "every command answered",
            all_answered,
            within=300,
            interval=1,
            diagnostics=wallet.log_tail,
        )
    finally:
        wallet.stop()

    # Exactly once: one recorded outcome per idempotency key, and the balances the model predicts.
    store = MongoLedgerStore(mongo_database)
    outcomes = [o async for o in store.all_outcomes()]
    assert len(outcomes) == DISTINCT
    assert Counter(o.key for o in outcomes).most_common(1)[0][1] == 1
    for user, balance in expected.items():
        (wallet_record,) = await store.wallets_of(user)
        assert wallet_record.balances.available == balance, user
    # Every reference got one answer, however often it was delivered: a duplicate carries the
    # status of the first delivery (which a crash may have kept from being published).
    answers: dict[str, set[str | None]] = {}
    for result in await results_so_far(kafka_bootstrap_servers, kafka_topics.results):
        effective = result.original_status if result.status == "duplicate" else result.status
        answers.setdefault(result.reference_id, set()).add(effective)
    assert set(answers) == {c["reference_id"] for _, c in stream}
    assert {ref: a for ref, a in answers.items() if len(a) != 1} == {}
    assert None not in set().union(*answers.values())
    assert await verify(store) == []
