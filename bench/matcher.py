"""Spot matching: the pure engine's orders/s on one core, and placed-to-settled with the wallet.

In process: a seeded stream of limit orders around a mid price (a fifth of them crossing, with a
few market orders and cancels), built beforehand; the timed loop is only `submit` / `cancel` of
one OrderBook, on one core.

End to end: the wallet (`python -m wallet`, memory store) and the trading service (`python -m
trading`, its orders in MONGODB_URL) as processes over Kafka. Makers rest first (untimed); then
takers are placed over HTTP, each crossing one maker. An order's latency is from its POST to the
wallet's result of the settle_trade of its fill on wallet.results (stamped by the wallet's
producer), on this machine's clock.

Every end-to-end run is checked against the contract (`bench.spot`: `spot_model`, `wrong_against`):
every order `filled` by one fill at the maker's price, each side's fee (the contract's default
rates, set explicitly, rounded up to the currency's scale; the amount is chosen so that the maker's
fee rounds), each trade on one buy and one sell and settled by the wallet in one ledger
transaction, then every trader's available and locked GBP and BTC and `platform:fees` as the wallet
reports them. A wrong answer stops the suite (`bench.suite.check`).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.pipeline import WalletProcess, delete_topics, start_service, start_wallet
from bench.spot import (
    TRADERS,
    SpotFound,
    TradeModel,
    fund,
    order_of,
    place,
    read_wallet,
    resting_asks,
    spot_model,
    trading_env,
    wrong_against,
)
from bench.stats import percentile, spread
from shared.infra import ensure_topics, free_port
from shared.messaging import CommandResult
from shared.messaging.topics import Topics
from shared.wallet_client import WalletClient
from trading.spot.domain.book import Order, OrderBook, OrderType, Side
from trading.spot.domain.markets import MARKETS, Fees


@dataclass(slots=True)
class MatcherRun:
    orders: int
    fills: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.orders / self.seconds


def _stream(count: int, seed: int) -> list[Order | str]:
    """Orders (and order ids to cancel) of BTC-GBP around 50,000.00 GBP."""
    market = MARKETS["BTC-GBP"]
    rng = random.Random(seed)
    mid = 5_000_000
    stream: list[Order | str] = []
    placed: list[str] = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.05 and placed:
            stream.append(placed[rng.randrange(len(placed))])
            continue
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        steps = rng.randint(1, 200)
        user = f"u{rng.randrange(1000)}"
        if roll < 0.08:
            hold = (
                market.quote_ceil(mid + 500, steps)
                if side is Side.BUY
                else market.base_units(steps)
            )
            stream.append(Order(f"o{n}", user, side, OrderType.MARKET, None, steps, hold))
            continue
        # a fifth cross the spread, the rest rest within 100 ticks of it
        offset = rng.randint(-20, 100)
        price = mid - offset if side is Side.BUY else mid + offset
        hold = market.quote_ceil(price, steps) if side is Side.BUY else market.base_units(steps)
        stream.append(Order(f"o{n}", user, side, OrderType.LIMIT, price, steps, hold))
        placed.append(f"o{n}")
    return stream


def run_matcher_inprocess(orders: int = 200_000, seed: int = 0) -> MatcherRun:
    stream = _stream(orders, seed)
    book = OrderBook(MARKETS["BTC-GBP"], Fees.of("0.001", "0.002"))
    submit, cancel = book.submit, book.cancel
    fills = 0
    started = time.perf_counter()
    for item in stream:
        if isinstance(item, str):
            cancel(item)
        else:
            fills += len(submit(item)[0])
    seconds = time.perf_counter() - started
    return MatcherRun(len(stream), fills, seconds)


@dataclass(slots=True)
class SpotRun:
    orders: int  # takers placed in the timed phase, each settled by one trade
    seconds: float  # first taker POST → last settle result
    latencies_ms: list[float] = field(default_factory=list)
    found: SpotFound = field(default_factory=SpotFound)
    wrong: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.orders / self.seconds


async def run_spot_end_to_end(
    bootstrap: str,
    mongodb_url: str,
    *,
    takers: int = 200,
    concurrency: int = 20,
    log_dir: Path | None = None,
) -> SpotRun:
    topics = Topics(prefix=f"bench.{uuid.uuid4().hex[:8]}.spot.")
    await ensure_topics(bootstrap, topics.all)
    wallet, wallet_port = await start_wallet(bootstrap, topics, 500, WalletProcess(log_dir=log_dir))
    port = free_port()
    database = f"bench_spot_{uuid.uuid4().hex[:8]}"
    env = trading_env(bootstrap, topics, mongodb_url, database, port)
    log = log_dir / f"trading-{topics.prefix.strip('.')}.log" if log_dir else None
    trading = await start_service(
        "trading", (sys.executable, "-m", "trading"), env, port, log, 120.0
    )
    model = spot_model()
    try:
        async with (
            WalletClient(bootstrap, topics=topics, timeout=120) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http,
        ):
            await fund(client, [model])
            run = await _drive(http, model, bootstrap, topics, takers, concurrency)
        await read_wallet(run.found, wallet_port)
        run.wrong = wrong_against(model, run.found)
        return run
    finally:
        trading.stop()
        wallet.stop()
        await delete_topics(bootstrap, topics)


async def _drive(
    http: httpx.AsyncClient,
    model: TradeModel,
    bootstrap: str,
    topics: Topics,
    takers: int,
    concurrency: int,
) -> SpotRun:
    sellers = [f"seller{n}" for n in range(TRADERS)]
    buyers = [f"buyer{n}" for n in range(TRADERS)]
    gate = asyncio.Semaphore(concurrency)

    async def placed(user: str, side: str) -> tuple[str, float]:
        async with gate:
            at = time.time()
            return await place(http, model, user, side), at

    # makers rest first (untimed): the book's asks show all of them
    makers = await asyncio.gather(*(placed(sellers[n % TRADERS], "sell") for n in range(takers)))
    deadline = time.time() + 120
    while (resting := await resting_asks(http, model.pair)) != model.amount * takers:
        if time.time() > deadline:
            statuses: Counter[str] = Counter()
            for n, (order_id, _) in enumerate(makers):
                statuses[(await order_of(http, sellers[n % TRADERS], order_id))["status"]] += 1
            raise AssertionError(f"the makers did not all rest: {resting} in the book, {statuses}")
        await asyncio.sleep(0.2)
    settled: dict[str, float] = {}
    reader = await _settle_reader(bootstrap, topics)
    listening = asyncio.create_task(_collect(reader, settled))
    try:
        started = time.time()
        bought = await asyncio.gather(*(placed(buyers[n % TRADERS], "buy") for n in range(takers)))
        # timed until the wallet settled a trade per taker (nothing else polls meanwhile)
        deadline = time.time() + 300
        while len(settled) < takers:
            if time.time() > deadline:
                statuses = Counter()
                for n, (order_id, _) in enumerate(bought):
                    statuses[(await order_of(http, buyers[n % TRADERS], order_id))["status"]] += 1
                raise AssertionError(f"{len(settled)} of {takers} trades settled; {statuses}")
            await asyncio.sleep(0.05)
    finally:
        listening.cancel()
        await reader.stop()
    found = SpotFound()
    # An order shows its fill once the matcher heard the wallet's result, a moment after the
    # result is on wallet.results: read them once they all show it (or as they are, to be told).
    deadline = time.time() + 60
    while True:
        found.takers = [
            await order_of(http, buyers[n % TRADERS], order_id)
            for n, (order_id, _) in enumerate(bought)
        ]
        found.makers = [
            await order_of(http, sellers[n % TRADERS], order_id)
            for n, (order_id, _) in enumerate(makers)
        ]
        shown = all(o["status"] == "filled" for o in (*found.takers, *found.makers))
        if shown or time.time() > deadline:
            break
        await asyncio.sleep(0.05)
    trades: dict[str, str] = {}
    for (order_id, _), order in zip(bought, found.takers, strict=True):
        if order["status"] != "filled":
            raise AssertionError(f"taker {order_id} is {order['status']}")
        trades[order_id] = order["fills"][0]["trade_id"]
    ends = [settled[trades[order_id]] for order_id, _ in bought]
    latencies = [(settled[trades[o]] - at) * 1000 for o, at in bought]
    return SpotRun(takers, max(ends) - started, latencies, found)


async def _settle_reader(bootstrap: str, topics: Topics) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    await consumer.topics()
    partitions = consumer.partitions_for_topic(topics.results) or set()
    assigned = [TopicPartition(topics.results, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    await consumer.seek_to_end(*assigned)
    for tp in assigned:
        await consumer.position(tp)
    return consumer


async def _collect(consumer: AIOKafkaConsumer, settled: dict[str, float]) -> None:
    async for record in consumer:
        if record.value is None:
            continue
        result = CommandResult.model_validate_json(record.value)
        if result.type == "settle_trade" and result.status == "applied":
            settled[result.reference_id] = record.timestamp / 1000


async def spot_part(
    bootstrap: str,
    mongodb: tuple[str, str],
    *,
    runs: int,
    orders: int,
    takers: int,
    end_to_end_runs: int = 1,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """The suite's spot figures: in-process orders/s, end-to-end orders/s with p50/p99; every
    end-to-end run checked against the contract (a wrong answer stops the suite)."""
    from bench.suite import check  # the suite imports this module

    matched = [run_matcher_inprocess(orders, seed) for seed in range(runs)]
    url, origin = mongodb
    e2e: list[SpotRun] = []
    for attempt in range(1, end_to_end_runs + 1):
        run = await run_spot_end_to_end(bootstrap, url, takers=takers, log_dir=log_dir)
        check(f"spot end to end run {attempt}", run.wrong)
        e2e.append(run)
    return {
        "matcher_orders": orders,
        "matcher_orders_per_s": spread([r.per_s for r in matched]),
        "matcher_fills": matched[-1].fills,
        # the trading service keeps its orders in MongoDB: on the embedded stand-in, its timings
        "mongodb": origin,
        "end_to_end_orders": takers,
        "end_to_end_orders_per_s": spread([r.per_s for r in e2e]),
        "end_to_end_p50_ms": spread([percentile(r.latencies_ms, 0.50) for r in e2e]),
        "end_to_end_p99_ms": spread([percentile(r.latencies_ms, 0.99) for r in e2e]),
        "end_to_end_checked": "every order filled once at the maker's price with its fee (rounded"
        " up); every trader's GBP and BTC, available and locked; platform:fees",
    }


def spot_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    spot = figures.get("spot")
    if not spot:
        return []

    def cell(figure: dict[str, float], digits: int = 0) -> str:
        return f"{figure['median']:,.{digits}f} ({figure['min']:,.{digits}f}–{figure['max']:,.{digits}f})"

    return [
        ("spot matcher in process, one core: orders/s", cell(spot["matcher_orders_per_s"])),
        (
            f"spot placed → settled with the wallet ({spot['mongodb']} MongoDB): orders/s",
            cell(spot["end_to_end_orders_per_s"], 1),
        ),
        (
            "spot placed → settled: p50 / p99 ms",
            f"{cell(spot['end_to_end_p50_ms'])} / {cell(spot['end_to_end_p99_ms'])}",
        ),
    ]
