"""The IPN path: signed IPNs posted to the gateway at a steady rate, each for a deposit of its own.

The wallet (`WALLET_STORE=memory`), the NOWPayments simulator and the gateway run as their own
processes, as in production. Deposits are created first through the gateway (which asks the
simulator), then the IPNs are fired open-loop: each at its planned instant, whether or not earlier
ones were answered. Two latencies per IPN, from the instant it was sent: the gateway's answer, and
the credit's result on `wallet.results` (the wallet publishes it after the commit, so the balance
is visible from then on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient

from bench.pipeline import (
    WalletProcess,
    delete_topics,
    start_service,
    start_wallet,
    wallet_balances,
)
from ipn_gateway.domain.js_json import JsonNumber, js_stringify
from ipn_gateway.domain.signature import sign
from shared.http import make_token
from shared.infra import ManagedProcess, ensure_topics, free_port
from shared.messaging.topics import Topics

# Fresh for every process that runs the bench: the services get them through their environment.
JWT_SECRET = secrets.token_hex(32)
IPN_SECRET = secrets.token_hex(32)
API_KEY = secrets.token_hex(16)


@dataclass(slots=True)
class IpnRun:
    sent: int
    rate: float
    answers_ms: list[float] = field(default_factory=list)
    to_balance_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # HTTP status and gateway status
    # Applied credits per deposit seen on wallet.results, and what the wallet's balances say.
    credits: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Deposit:
    user_id: str
    order_id: str
    payment_id: str
    pay_amount: str
    pay_address: str
    pay_currency: str


def ipn_body(deposit: Deposit) -> dict[str, Any]:
    """A `finished` IPN as NOWPayments sends it (amounts as JavaScript numbers)."""
    amount = JsonNumber(deposit.pay_amount)
    return {
        "payment_id": JsonNumber(deposit.payment_id),
        "invoice_id": None,
        "payment_status": "finished",
        "pay_address": deposit.pay_address,
        "price_amount": JsonNumber("100"),
        "price_currency": "usd",
        "pay_amount": amount,
        "actually_paid": amount,
        "pay_currency": deposit.pay_currency,
        "order_id": deposit.order_id,
        "order_description": "",
        "purchase_id": deposit.payment_id,
        "outcome_amount": amount,
        "outcome_currency": deposit.pay_currency,
    }


async def _services(
    bootstrap: str, mongodb_url: str, topics: Topics, database: str, log_dir: Path | None
) -> tuple[list[ManagedProcess], str, int]:
    started: list[ManagedProcess] = []
    try:
        wallet, wallet_port = await start_wallet(
            bootstrap, topics, 500, WalletProcess(log_dir=log_dir)
        )
        started.append(wallet)
        simulator_port, gateway_port = free_port(), free_port()
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        common = {
            **os.environ,
            "NOWPAYMENTS_IPN_SECRET": IPN_SECRET,
            "NOWPAYMENTS_API_KEY": API_KEY,
            "AUTH_JWT_SECRET": JWT_SECRET,
            "LOG_LEVEL": "WARNING",
        }
        simulator_env = {
            **common,
            "NOWPAYMENTS_SIMULATOR_PORT": str(simulator_port),
            "NOWPAYMENTS_SIMULATOR_IPN_URL": f"{gateway_url}/api/nowpayments/ipn",
        }
        log = (lambda name: log_dir / f"{name}-{topics.prefix.strip('.')}.log") if log_dir else None
        started.append(
            await start_service(
                "nowpayments-simulator",
                [sys.executable, "-m", "ipn_gateway.simulator"],
                simulator_env,
                simulator_port,
                log("simulator") if log else None,
                60,
            )
        )
        gateway_env = {
            **common,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_PREFIX": topics.prefix,
            "MONGODB_URL": mongodb_url,
            "IPN_GATEWAY_MONGODB_DATABASE": database,
            "IPN_GATEWAY_HTTP_PORT": str(gateway_port),
            "NOWPAYMENTS_API_URL": f"http://127.0.0.1:{simulator_port}",
            "IPN_GATEWAY_RESULTS_CONSUMER_GROUP": f"{topics.prefix}ipn-gateway",
            "IPN_GATEWAY_RESULTS_SESSION_TIMEOUT_MS": "3000",
            "IPN_GATEWAY_RESULTS_HEARTBEAT_INTERVAL_MS": "500",
        }
        started.append(
            await start_service(
                "ipn-gateway",
                [sys.executable, "-m", "ipn_gateway"],
                gateway_env,
                gateway_port,
                log("gateway") if log else None,
                60,
            )
        )
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    return started, gateway_url, wallet_port


async def _create_deposits(
    http: httpx.AsyncClient, gateway: str, count: int, tag: str
) -> list[Deposit]:
    limit = asyncio.Semaphore(8)

    async def one(index: int) -> Deposit:
        user = f"{tag}-ipn-{index:05d}"
        headers = {"Authorization": f"Bearer {make_token(JWT_SECRET, user)}"}
        async with limit:
            response = await http.post(
                f"{gateway}/api/nowpayments/create-deposit",
                json={"currency": "btc", "amount": "100", "price_currency": "usd"},
                headers=headers,
            )
        response.raise_for_status()
        body = response.json()
        return Deposit(
            user,
            str(body["order_id"]),
            str(body["payment_id"]),
            str(body["pay_amount"]),
            str(body["pay_address"]),
            str(body["pay_currency"]),
        )

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _watch_credits(
    consumer: AIOKafkaConsumer, users: set[str], seen: dict[str, float], credits: Counter[str]
) -> None:
    """Until every deposit's credit was applied, then a moment more: a second credit would show."""
    quiet_until: float | None = None
    while quiet_until is None or time.monotonic() < quiet_until:
        batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
        for records in batches.values():
            for record in records:
                result = json.loads(record.value)
                user = result["user_id"]
                if user in users and result["status"] == "applied":
                    credits[user] += 1
                    seen.setdefault(user, record.timestamp / 1000)
        if quiet_until is None and len(seen) == len(users):
            quiet_until = time.monotonic() + 1.0


async def run_ipn(
    bootstrap: str,
    mongodb_url: str,
    *,
    rate: float = 100.0,
    seconds: float = 30.0,
    log_dir: Path | None = None,
    results_within: float = 300.0,
) -> IpnRun:
    """One run: services up, deposits created, IPNs fired at `rate` per second for `seconds`."""
    tag = uuid.uuid4().hex[:8]
    topics = Topics(prefix=f"bench.{tag}.ipn.")
    database = f"bench_ipn_{tag}"
    await ensure_topics(bootstrap, topics.all)
    processes, gateway, wallet_port = await _services(
        bootstrap, mongodb_url, topics, database, log_dir
    )
    count = max(1, round(rate * seconds))
    run = IpnRun(count, rate)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    try:
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            deposits = await _create_deposits(http, gateway, count, tag)
            await consumer.start()
            partitions = consumer.partitions_for_topic(topics.results) or set()
            assigned = [TopicPartition(topics.results, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            sent_at: dict[str, float] = {}
            credited: dict[str, float] = {}
            watcher = asyncio.create_task(
                _watch_credits(consumer, {d.user_id for d in deposits}, credited, run.credits)
            )

            async def fire(deposit: Deposit) -> None:
                body = ipn_body(deposit)
                raw = js_stringify(body).encode()
                headers = {
                    "content-type": "application/json",
                    "x-nowpayments-sig": sign(body, IPN_SECRET),
                }
                sent_at[deposit.user_id] = time.time()
                started = time.perf_counter()
                response = await http.post(
                    f"{gateway}/api/nowpayments/ipn", content=raw, headers=headers
                )
                run.answers_ms.append((time.perf_counter() - started) * 1000)
                status = response.json().get("status") if response.status_code == 200 else None
                run.answers[f"{response.status_code} {status}"] += 1

            first = time.monotonic()
            firing = []
            for index, deposit in enumerate(deposits):
                # Open loop: each IPN at its planned instant, not after the previous answer.
                await asyncio.sleep(max(0.0, first + index / rate - time.monotonic()))
                firing.append(asyncio.create_task(fire(deposit)))
            await asyncio.gather(*firing)
            await asyncio.wait_for(watcher, results_within)
            run.to_balance_ms = [
                max(0.0, credited[user] - sent) * 1000 for user, sent in sent_at.items()
            ]
            # Exactly one credit per deposit: one applied result each, and the balance is its amount.
            balances = await wallet_balances(wallet_port, [d.user_id for d in deposits])
            for deposit in deposits:
                count = run.credits[deposit.user_id]
                key = (deposit.user_id, deposit.pay_currency.upper())
                total = balances.get(key, (None, None, None))[2]
                if count != 1 or total != Decimal(deposit.pay_amount):
                    run.wrong.append(f"{deposit.user_id}: {count} credits, total {total}")
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        for process in reversed(processes):
            process.stop()
        await delete_topics(bootstrap, topics)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
        with contextlib.suppress(Exception):
            await client.drop_database(database)
        await client.close()
    return run
