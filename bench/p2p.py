"""The P2P escrow path: create-trade → escrowed → paid → released → completed, through p2p and the
wallet.

    python -m bench.p2p [--trades 60] [--concurrency 4] [--out build/bench-p2p.json]

The wallet (`WALLET_STORE=memory`) and the p2p service run as their own processes, as in
production; p2p keeps its offers and trades in MongoDB (the embedded stand-in unless `MONGODB_URL`
is set: then the input is reduced and the timing is the stand-in's, see docs/architecture.md).
Each of `concurrency` pairs has a seller, funded first through the wallet with what its trades
will lock, and a buyer; the seller posts one offer, then the buyer runs a closed loop of whole
trades on it: create-trade, poll `GET /trades/{id}` every 10 ms until the escrow is locked,
mark-paid, the seller's release-crypto, poll until completed. Per trade: the create's and the
release's answer times, create → escrowed and release → completed (as the client sees them: the
wallet committed, published the result, and p2p recorded it).

Then every answer is checked against a model built from the contract's rules alone (never from
the service's own answers): each trade completed, once, with the contract's fee (amount ×
`P2P_FEE_RATE` rounded up to the coin's scale, paid by the seller) and fiat amount; every seller's
and buyer's available and locked balance read back through the wallet's HTTP API; the fees in
`platform:fees`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal
from pathlib import Path
from typing import Any, Final

import httpx

from bench.pipeline import (
    JWT_SECRET,
    WalletProcess,
    delete_topics,
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

PREFIX: Final = "/api/p2p/enhanced"
CURRENCY: Final = "BTC"
FIAT: Final = "GBP"
PRICE: Final = Decimal("52000.00")
# The contract's default P2P_FEE_RATE; the bench sets it explicitly so the model is not a guess.
FEE_RATE: Final = Decimal("0.001")
FUNDING_SPARE: Final = Decimal("0.5")  # on top of what a seller's trades lock: never exactly 0
ESCROW_PENDING: Final = frozenset({"pending_escrow"})
RELEASE_PENDING: Final = frozenset({"releasing"})
# Defaults: on the embedded stand-in (one MongoDB operation at a time, slow inserts), and on a real
# MongoDB.
STAND_IN_TRADES: Final = 60
STAND_IN_CONCURRENCY: Final = 4
TRADES: Final = 400
CONCURRENCY: Final = 8


def trade_amount(index: int) -> Decimal:
    """The amount of a pair's `index`-th trade: mostly not a multiple of 1 / rate, so most fees
    round (up, by the contract) and a fee rounded the other way shows in the balances."""
    return Decimal("0.01") + Decimal(index) * Decimal("0.00000137")


def contract_fee(amount: Decimal, rate: Decimal = FEE_RATE) -> Decimal:
    return (amount * rate).quantize(get_currency(CURRENCY).quantum, rounding=ROUND_UP)


def contract_fiat_amount(amount: Decimal) -> Decimal:
    return (amount * PRICE).quantize(get_currency(FIAT).quantum, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Pair:
    seller: str
    buyer: str
    trades: int

    @property
    def amounts(self) -> list[Decimal]:
        return [trade_amount(i) for i in range(self.trades)]

    @property
    def funding(self) -> Decimal:
        return sum((a + contract_fee(a) for a in self.amounts), FUNDING_SPARE)


@dataclass(slots=True)
class Model:
    """What the contract says the run ends with."""

    balances: dict[WalletKey, tuple[Decimal, Decimal]]  # (available, locked) per user
    fees: Decimal  # in platform:fees (a fresh wallet: nothing before the run)
    trade_fees: dict[tuple[str, Decimal], Decimal]  # (buyer, amount) → fee
    completed_per_buyer: dict[str, int]


def expected(pairs: list[Pair], fee: Callable[[Decimal], Decimal] = contract_fee) -> Model:
    """The model: the seller pays amount + fee, the buyer receives amount, the fee goes to
    platform:fees, and nothing stays locked."""
    balances: dict[WalletKey, tuple[Decimal, Decimal]] = {}
    trade_fees: dict[tuple[str, Decimal], Decimal] = {}
    total_fees = Decimal(0)
    for pair in pairs:
        fees = [fee(a) for a in pair.amounts]
        total_fees += sum(fees, Decimal(0))
        spent = sum(pair.amounts, Decimal(0))
        balances[(pair.seller, CURRENCY)] = (
            pair.funding - spent - sum(fees, Decimal(0)),
            Decimal(0),
        )
        balances[(pair.buyer, CURRENCY)] = (spent, Decimal(0))
        trade_fees |= {(pair.buyer, a): f for a, f in zip(pair.amounts, fees, strict=True)}
    completed = {pair.buyer: pair.trades for pair in pairs}
    return Model(balances, total_fees, trade_fees, completed)


@dataclass(slots=True)
class Found:
    """What the system answered: the trades as p2p lists them, the wallet's balances and fees."""

    trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # buyer → own trades
    balances: dict[WalletKey, tuple[Decimal, Decimal]] = field(default_factory=dict)
    fees: Decimal | None = None


def wrong_against(model: Model, found: Found) -> list[str]:
    wrong: list[str] = []
    for buyer, count in model.completed_per_buyer.items():
        trades = found.trades.get(buyer, [])
        statuses = Counter(t["status"] for t in trades)
        if (
            statuses != Counter({"completed": count})
            or len({t["trade_id"] for t in trades}) != count
        ):
            wrong.append(f"{buyer}: trades {dict(statuses)}, {count} completed expected")
        for trade in trades:
            amount = Decimal(trade["amount"])
            fee = model.trade_fees.get((buyer, amount))
            if fee is None or Decimal(trade["fee"]) != fee:
                wrong.append(f"{trade['trade_id']}: fee {trade['fee']} for {amount}, model {fee}")
            fiat = contract_fiat_amount(amount)
            if Decimal(trade["fiat_amount"]) != fiat:
                wrong.append(f"{trade['trade_id']}: fiat {trade['fiat_amount']}, model {fiat}")
    for key, balance in model.balances.items():
        if found.balances.get(key, (Decimal(0), Decimal(0))) != balance:
            wrong.append(f"{key}: (available, locked) {found.balances.get(key)}, model {balance}")
    if found.fees != model.fees:
        wrong.append(f"platform:fees {found.fees}, model {model.fees}")
    return wrong


@dataclass(slots=True)
class P2pRun:
    trades: int
    concurrency: int
    pairs: list[Pair]
    mongodb: str
    seconds: float = 0.0
    create_ms: list[float] = field(default_factory=list)
    to_escrowed_ms: list[float] = field(default_factory=list)
    release_ms: list[float] = field(default_factory=list)
    to_completed_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    found: Found = field(default_factory=Found)
    wrong: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "trades": self.trades,
            "concurrency": self.concurrency,
            "mongodb": self.mongodb,
            "trades_per_s": round(self.trades / self.seconds, 2) if self.seconds else None,
            **p50_p99_ms("create", self.create_ms),
            **p50_p99_ms("create_to_escrowed", self.to_escrowed_ms),
            **p50_p99_ms("release", self.release_ms),
            **p50_p99_ms("release_to_completed", self.to_completed_ms),
            "outcomes": dict(self.outcomes),
            "checked": "each trade completed once with the contract's fee and fiat amount; every "
            "seller's and buyer's available and locked balance; platform:fees",
        }


def _auth(user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}


def pairs_for(trades: int, concurrency: int, tag: str) -> list[Pair]:
    return [
        Pair(f"bench-p2p-{tag}-seller-{i}", f"bench-p2p-{tag}-buyer-{i}", count)
        for i in range(concurrency)
        if (count := trades // concurrency + (i < trades % concurrency))
    ]


async def _fund(wallet: WalletClient, pair: Pair) -> None:
    result = await wallet.credit(
        user_id=pair.seller,
        currency=CURRENCY,
        amount=str(pair.funding),
        transaction_type="deposit_nowpayments",
        reference_id=f"bench-deposit-{pair.seller}",
    )
    if result is None or result.status != "applied":
        raise RuntimeError(f"funding {pair.seller} failed: {result}")


async def _offer(http: httpx.AsyncClient, pair: Pair) -> str:
    """One offer per seller: an offer locks nothing, and each trade locks its own coins."""
    posted = await http.post(
        f"{PREFIX}/offers",
        json={
            "currency": CURRENCY,
            "fiat_currency": FIAT,
            "price": str(PRICE),
            "min_amount": "0.001",
            "max_amount": "1",
            "payment_methods": ["bank_transfer"],
            "payment_window_minutes": 60,
        },
        headers=_auth(pair.seller),
    )
    posted.raise_for_status()
    return str(posted.json()["offer_id"])


async def _one_trade(
    http: httpx.AsyncClient, pair: Pair, offer_id: str, amount: Decimal, run: P2pRun
) -> None:
    buyer, seller = _auth(pair.buyer), _auth(pair.seller)

    def url_of(trade: dict[str, Any]) -> str:
        return f"{PREFIX}/trades/{trade['trade_id']}"

    body = {"offer_id": offer_id, "amount": str(amount)}
    created = await post_until_settled(
        http, f"{PREFIX}/create-trade", body, buyer, url_of, ESCROW_PENDING
    )
    run.create_ms.append(created.answer_ms)
    run.to_escrowed_ms.append(created.settled_ms)
    if created.status != "escrowed":
        run.outcomes[f"{created.status} before payment"] += 1
        return
    trade = {"trade_id": created.answer["trade_id"]}
    (await http.post(f"{PREFIX}/mark-paid", json=trade, headers=buyer)).raise_for_status()
    released = await post_until_settled(
        http, f"{PREFIX}/release-crypto", trade, seller, url_of, RELEASE_PENDING
    )
    run.release_ms.append(released.answer_ms)
    run.to_completed_ms.append(released.settled_ms)
    run.outcomes[released.status] += 1


async def _read_back(http: httpx.AsyncClient, wallet_port: int, run: P2pRun) -> None:
    """The trades as p2p lists them to each buyer, every party's balances and platform:fees, all
    through the services' HTTP APIs."""
    for pair in run.pairs:
        listed = await http.get(f"{PREFIX}/trades", headers=_auth(pair.buyer))
        listed.raise_for_status()
        run.found.trades[pair.buyer] = listed.json()["items"]
    users = [u for pair in run.pairs for u in (pair.seller, pair.buyer)]
    run.found.balances = {
        key: (available, locked)
        for key, (available, locked, _) in (await wallet_balances(wallet_port, users)).items()
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{wallet_port}", timeout=30) as w:
        platform = await w.get("/api/wallets/platform-balances", headers=_auth("bench", "admin"))
    platform.raise_for_status()
    run.found.fees = Decimal(0)
    for row in platform.json()["accounts"]:
        if (row["account"], row["currency"]) == ("platform:fees", CURRENCY):
            run.found.fees = Decimal(row["balance"])


def sized(infra: Infrastructure, trades: int | None, concurrency: int | None) -> tuple[int, int]:
    """The asked size, or the default for this MongoDB (smaller on the embedded stand-in)."""
    stand_in = infra.mongodb.origin == "embedded"
    return (
        trades or (STAND_IN_TRADES if stand_in else TRADES),
        concurrency or (STAND_IN_CONCURRENCY if stand_in else CONCURRENCY),
    )


async def run_p2p(
    infra: Infrastructure, trades: int, concurrency: int, log_dir: Path | None = None
) -> P2pRun:
    """One run on fresh topics and a fresh database; `wrong` lists every answer off the model."""
    tag = uuid.uuid4().hex[:8]
    topics = Topics(prefix=f"bench-p2p.{tag}.")
    bootstrap = infra.kafka_bootstrap_servers
    await ensure_topics(bootstrap, topics.all)
    wallet_process, wallet_port = await start_wallet(
        bootstrap, topics, 500, WalletProcess(log_dir=log_dir)
    )
    port = free_port()
    env = results_service_env(
        "P2P", bootstrap, topics, infra.mongodb_url, f"bench_p2p_{tag}", port
    ) | {"P2P_FEE_RATE": str(FEE_RATE)}
    log = log_dir / f"p2p-{tag}.log" if log_dir else None
    try:
        p2p = await start_service("p2p", [sys.executable, "-m", "p2p"], env, port, log, 60)
    except BaseException:
        wallet_process.stop()
        raise
    pairs = pairs_for(trades, concurrency, tag)
    run = P2pRun(trades, concurrency, pairs, infra.mongodb.origin)
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
            WalletClient(bootstrap, topics=topics, timeout=30) as wallet,
        ):
            await asyncio.gather(*(_fund(wallet, pair) for pair in pairs))
            offers = [await _offer(http, pair) for pair in pairs]

            async def client(pair: Pair, offer_id: str) -> None:
                for amount in pair.amounts:
                    await _one_trade(http, pair, offer_id, amount, run)

            started = time.perf_counter()
            await asyncio.gather(*(client(p, o) for p, o in zip(pairs, offers, strict=True)))
            run.seconds = time.perf_counter() - started
            await _read_back(http, wallet_port, run)
    finally:
        p2p.stop()
        wallet_process.stop()
        await delete_topics(bootstrap, topics)
    run.wrong = wrong_against(expected(pairs), run.found)
    return run


async def measure(trades: int | None, concurrency: int | None) -> dict[str, Any]:
    from bench.suite import check  # the suite imports this module

    async with Infrastructure.from_environment() as infra:
        run = await run_p2p(infra, *sized(infra, trades, concurrency))
        check("p2p", run.wrong)
        return {"p2p": run.figures(), "mongodb": infra.mongodb.describe()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trades", type=int, help=f"default {STAND_IN_TRADES} on the stand-in")
    parser.add_argument("--concurrency", type=int, help=f"default {STAND_IN_CONCURRENCY} on it")
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args()
    text = json.dumps(asyncio.run(measure(arguments.trades, arguments.concurrency)), indent=2)
    print(text)
    if arguments.out is not None:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        arguments.out.write_text(text + "\n")
