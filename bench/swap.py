"""The swap path: quote → execute → completed, through the trading service and the wallet.

    python -m bench.swap [--swaps 200] [--concurrency 8] [--out build/bench-swap.json]

The wallet (`WALLET_STORE=memory`) and the trading service run as their own processes, as in
production; trading keeps its quotes in MongoDB (the embedded stand-in unless `MONGODB_URL` is
set: then the figures are the stand-in's, see docs/architecture.md). Prices are pinned and
`platform:liquidity` funded first; each user gets the BTC it swaps. `concurrency` clients then run
closed loops of quote, execute, and polling `GET /api/swap/{id}` every 10 ms until it is no longer
pending. Per swap: the quote's and the execute's answer times, and execute → completed (as the
client sees it: the wallet committed, published the result, and trading recorded it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.pipeline import (
    WalletProcess,
    delete_topics,
    post_until_settled,
    results_service_env,
    start_service,
    start_wallet,
)
from bench.stats import p50_p99_ms
from shared.http import make_token
from shared.infra import Infrastructure, ensure_topics, free_port
from shared.messaging.topics import Topics
from shared.wallet_client import WalletClient

JWT_SECRET = secrets.token_hex(32)
PENDING = frozenset({"pending"})


@dataclass(slots=True)
class SwapRun:
    swaps: int
    concurrency: int
    seconds: float = 0.0
    quote_ms: list[float] = field(default_factory=list)
    execute_ms: list[float] = field(default_factory=list)
    to_completed_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def figures(self) -> dict[str, Any]:
        return {
            "swaps": self.swaps,
            "concurrency": self.concurrency,
            "swaps_per_s": round(self.swaps / self.seconds, 1) if self.seconds else None,
            **p50_p99_ms("quote", self.quote_ms),
            **p50_p99_ms("execute", self.execute_ms),
            **p50_p99_ms("execute_to_completed", self.to_completed_ms),
            "outcomes": dict(self.outcomes),
        }


def _auth(user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}


async def _prepare(http: httpx.AsyncClient, wallet: WalletClient, users: list[str]) -> None:
    admin = _auth("bench-ops", "admin")
    for currency, price in (("BTC", "52000"), ("ETH", "2800")):
        pinned = await http.put(
            "/api/admin/prices", json={"currency": currency, "price": price}, headers=admin
        )
        pinned.raise_for_status()
    funded = await http.post(
        "/api/admin/liquidity",
        json={"currency": "ETH", "amount": "1000000", "reference_id": f"bench-{uuid.uuid4().hex}"},
        headers=admin,
    )
    funded.raise_for_status()
    for user in users:
        result = await wallet.credit(
            user_id=user,
            currency="BTC",
            amount="10",
            transaction_type="deposit_nowpayments",
            reference_id=f"bench-deposit-{user}",
        )
        if result is None or result.status != "applied":
            raise RuntimeError(f"funding {user} failed: {result}")


async def _one_swap(http: httpx.AsyncClient, user: str, run: SwapRun) -> None:
    headers = _auth(user)
    started = time.perf_counter()
    quoted = await http.post(
        "/api/swap/quote",
        json={"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.001"},
        headers=headers,
    )
    quoted.raise_for_status()
    executing = time.perf_counter()
    executed = await post_until_settled(
        http,
        "/api/swap/execute",
        {"quote_id": quoted.json()["quote_id"]},
        headers,
        lambda answer: f"/api/swap/{answer['swap_id']}",
        PENDING,
    )
    run.quote_ms.append((executing - started) * 1000)
    run.execute_ms.append(executed.answer_ms)
    run.to_completed_ms.append(executed.settled_ms)
    run.outcomes[executed.status] += 1


async def run_swaps(infra: Infrastructure, swaps: int, concurrency: int) -> SwapRun:
    topics = Topics(prefix=f"bench-swap.{uuid.uuid4().hex[:8]}.")
    await ensure_topics(infra.kafka_bootstrap_servers, topics.all)
    wallet_process, _ = await start_wallet(
        infra.kafka_bootstrap_servers,
        topics,
        500,
        WalletProcess(extra_env=(("AUTH_JWT_SECRET", JWT_SECRET),)),
    )
    port = free_port()
    database = f"bench_swap_{uuid.uuid4().hex[:8]}"
    bootstrap = infra.kafka_bootstrap_servers
    env = results_service_env(
        "TRADING", bootstrap, topics, infra.mongodb_url, database, port, JWT_SECRET
    )
    trading = await start_service("trading", [sys.executable, "-m", "trading"], env, port, None, 60)
    run = SwapRun(swaps, concurrency)
    try:
        users = [f"bench-swapper-{i}" for i in range(concurrency)]
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
            WalletClient(infra.kafka_bootstrap_servers, topics=topics, timeout=30) as wallet,
        ):
            await _prepare(http, wallet, users)
            per_user = [
                swaps // concurrency + (i < swaps % concurrency) for i in range(concurrency)
            ]

            async def client(user: str, count: int) -> None:
                for _ in range(count):
                    await _one_swap(http, user, run)

            started = time.perf_counter()
            await asyncio.gather(*(client(u, n) for u, n in zip(users, per_user, strict=True)))
            run.seconds = time.perf_counter() - started
    finally:
        trading.stop()
        wallet_process.stop()
        await delete_topics(infra.kafka_bootstrap_servers, topics)
    return run


async def measure(swaps: int, concurrency: int) -> dict[str, Any]:
    async with Infrastructure.from_environment() as infra:
        run = await run_swaps(infra, swaps, concurrency)
        return {"swap": run.figures(), "mongodb": infra.mongodb.describe()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--swaps", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args()
    text = json.dumps(asyncio.run(measure(arguments.swaps, arguments.concurrency)), indent=2)
    print(text)
    if arguments.out is not None:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        arguments.out.write_text(text + "\n")
