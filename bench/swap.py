"""The swap path: quote → execute → completed, through the trading service and the wallet.

    python -m bench.swap [--swaps 200] [--concurrency 8] [--out build/bench-swap.json]

The wallet (`WALLET_STORE=memory`) and the trading service run as their own processes, as in
production; trading keeps its quotes in MongoDB (the embedded stand-in unless `MONGODB_URL` is
set: then the figures are the stand-in's, see docs/architecture.md). Prices are pinned and
`platform:liquidity` funded first; each user gets the BTC it swaps. `concurrency` clients then run
closed loops of quote, execute, and polling `GET /api/swap/{id}` every 10 ms until it is no longer
pending. Per swap: the quote's and the execute's answer times, and execute → completed (as the
client sees it: the wallet committed, published the result, and trading recorded it).

Every run is checked against the contract (`expected`, `wrong_against`): each quote's fee, rate and
to_amount recomputed from the pinned prices and the contract's rounding, each swap `completed`,
and afterwards every swapper's BTC and ETH and the platform's fees and liquidity as the wallet
reports them. A wrong answer stops the suite (`bench.suite.check`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, Final

import httpx

from bench.pipeline import (
    JWT_SECRET,
    WalletProcess,
    delete_topics,
    platform_balances,
    post_until_settled,
    results_service_env,
    start_service,
    start_wallet,
    wallet_balances,
)
from bench.stats import p50_p99_ms
from bench.workload import WalletKey
from shared.http import make_token
from shared.infra import Infrastructure, ensure_topics, free_port
from shared.messaging.topics import Topics
from shared.money import get_currency
from shared.wallet_client import WalletClient

PENDING = frozenset({"pending"})
# What the run pins and sends; the contract's defaults (SWAP_FEE_RATE, SWAP_SPREAD).
PRICES: Final = {"BTC": Decimal("52000"), "ETH": Decimal("2800")}
FROM_AMOUNT: Final = Decimal("0.001")
FUNDED_BTC: Final = Decimal("10")
LIQUIDITY_ETH: Final = Decimal("1000000")
FEE_RATE: Final = Decimal("0.001")
SPREAD: Final = Decimal("0.005")
LIQUIDITY: Final = "platform:liquidity"
FEES: Final = "platform:fees"


def _step(currency: str) -> Decimal:
    return Decimal(1).scaleb(-get_currency(currency).scale)


@dataclass(frozen=True, slots=True)
class QuoteModel:
    """One quote of FROM_AMOUNT BTC → ETH as the contract computes it: the fee rounded up to the
    satoshi, the rate rounded down to 18 places, to_amount from that rate rounded down to ETH's
    scale."""

    fee: Decimal
    rate: Decimal
    to_amount: Decimal


def contract_quote(fee_rate: Decimal = FEE_RATE) -> QuoteModel:
    fee = (FROM_AMOUNT * fee_rate).quantize(_step("BTC"), rounding=ROUND_CEILING)
    rate = (PRICES["BTC"] / PRICES["ETH"] * (1 - SPREAD)).quantize(
        Decimal(1).scaleb(-18), rounding=ROUND_FLOOR
    )
    to_amount = ((FROM_AMOUNT - fee) * rate).quantize(_step("ETH"), rounding=ROUND_FLOOR)
    return QuoteModel(fee, rate, to_amount)


@dataclass(slots=True)
class SwapsFound:
    """What the system answered: each quote's figures and each swap's end, then the wallet's
    balances of every swapper and of the platform accounts."""

    quotes: list[dict[str, Any]] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)
    per_user: Counter[str] = field(default_factory=Counter)  # swaps each user ran
    balances: dict[WalletKey, tuple[Decimal, Decimal]] = field(default_factory=dict)
    platform: dict[WalletKey, Decimal] = field(default_factory=dict)


def wrong_against(model: QuoteModel, found: SwapsFound) -> list[str]:
    """Every way what ran differs from the contract: an empty list when it is right."""
    wrong: list[str] = []
    for quote in found.quotes:
        figures = (Decimal(quote["fee"]), Decimal(quote["rate"]), Decimal(quote["to_amount"]))
        if figures != (model.fee, model.rate, model.to_amount):
            wrong.append(
                f"quote {quote.get('quote_id')}: (fee, rate, to_amount) {figures}, model"
                f" {(model.fee, model.rate, model.to_amount)}"
            )
    wrong.extend(f"a swap ended {end}" for end in found.ends if end != "completed")
    zero = Decimal(0)
    for user, count in found.per_user.items():
        for currency, available in (
            ("BTC", FUNDED_BTC - count * FROM_AMOUNT),
            ("ETH", count * model.to_amount),
        ):
            held = found.balances.get((user, currency), (zero, zero))
            if held != (available, zero):
                wrong.append(
                    f"{user} {currency}: (available, locked) {held}, model {(available, zero)}"
                )
    swaps = sum(found.per_user.values())
    for key, balance in {
        (FEES, "BTC"): swaps * model.fee,
        (LIQUIDITY, "BTC"): swaps * (FROM_AMOUNT - model.fee),
        (LIQUIDITY, "ETH"): LIQUIDITY_ETH - swaps * model.to_amount,
    }.items():
        if found.platform.get(key, zero) != balance:
            wrong.append(f"{key[0]} {key[1]}: {found.platform.get(key)}, model {balance}")
    return wrong


@dataclass(slots=True)
class SwapRun:
    swaps: int
    concurrency: int
    seconds: float = 0.0
    quote_ms: list[float] = field(default_factory=list)
    execute_ms: list[float] = field(default_factory=list)
    to_completed_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    found: SwapsFound = field(default_factory=SwapsFound)
    wrong: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "swaps": self.swaps,
            "concurrency": self.concurrency,
            "swaps_per_s": round(self.swaps / self.seconds, 1) if self.seconds else None,
            **p50_p99_ms("quote", self.quote_ms),
            **p50_p99_ms("execute", self.execute_ms),
            **p50_p99_ms("execute_to_completed", self.to_completed_ms),
            "outcomes": dict(self.outcomes),
            "checked": "each quote's fee, rate and to_amount against the contract; each swap"
            " completed; every swapper's BTC and ETH; platform:fees and platform:liquidity",
        }


def _auth(user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}


async def _prepare(http: httpx.AsyncClient, wallet: WalletClient, users: list[str]) -> None:
    admin = _auth("bench-ops", "admin")
    for currency, price in PRICES.items():
        pinned = await http.put(
            "/api/admin/prices", json={"currency": currency, "price": str(price)}, headers=admin
        )
        pinned.raise_for_status()
    funded = await http.post(
        "/api/admin/liquidity",
        json={
            "currency": "ETH",
            "amount": str(LIQUIDITY_ETH),
            "reference_id": f"bench-{uuid.uuid4().hex}",
        },
        headers=admin,
    )
    funded.raise_for_status()
    for user in users:
        result = await wallet.credit(
            user_id=user,
            currency="BTC",
            amount=FUNDED_BTC,
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
        json={"from_currency": "BTC", "to_currency": "ETH", "from_amount": str(FROM_AMOUNT)},
        headers=headers,
    )
    quoted.raise_for_status()
    run.found.quotes.append(quoted.json())
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
    run.found.ends.append(executed.status)
    run.found.per_user[user] += 1


async def _read_back(wallet_port: int, users: list[str], found: SwapsFound) -> None:
    """Every swapper's balances and the platform accounts, through the wallet's HTTP API."""
    found.balances = {
        key: (available, locked)
        for key, (available, locked, _) in (await wallet_balances(wallet_port, users)).items()
    }
    found.platform = await platform_balances(wallet_port)


async def run_swaps(infra: Infrastructure, swaps: int, concurrency: int) -> SwapRun:
    topics = Topics(prefix=f"bench-swap.{uuid.uuid4().hex[:8]}.")
    await ensure_topics(infra.kafka_bootstrap_servers, topics.all)
    wallet_process, wallet_port = await start_wallet(
        infra.kafka_bootstrap_servers, topics, 500, WalletProcess()
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
        await _read_back(wallet_port, users, run.found)
    finally:
        trading.stop()
        wallet_process.stop()
        await delete_topics(infra.kafka_bootstrap_servers, topics)
    run.wrong = wrong_against(contract_quote(), run.found)
    return run


async def measure(swaps: int, concurrency: int) -> dict[str, Any]:
    from bench.suite import check  # the suite imports this module

    async with Infrastructure.from_environment() as infra:
        run = await run_swaps(infra, swaps, concurrency)
        check("swap", run.wrong)
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
