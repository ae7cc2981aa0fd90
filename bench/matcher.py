"""Spot matching: the pure engine's orders/s on one core, and placed-to-settled with the wallet.

In process: a seeded stream of limit orders around a mid price (a fifth of them crossing, with a
few market orders and cancels), built beforehand; the timed loop is only `submit` / `cancel` of
one OrderBook, on one core.

End to end: the wallet (`python -m wallet`, memory store) and the trading service (`python -m
trading`, its orders in MONGODB_URL) as processes over Kafka. Makers rest first (untimed); then
takers are placed over HTTP, each crossing one maker. An order's latency is from its POST to the
wallet's result of the settle_trade of its fill on wallet.results (stamped by the wallet's
producer), on this machine's clock.

Every end-to-end run is checked against the contract (`spot_model`, `wrong_against`): every order
`filled` by one fill at the maker's price, each side's fee (the contract's default rates, set
explicitly, rounded up to the currency's scale; the amount is chosen so that the maker's fee
rounds), then every trader's available and locked GBP and BTC and `platform:fees` as the wallet
reports them. A wrong answer stops the suite (`bench.suite.check`).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, Final

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.pipeline import (
    JWT_SECRET,
    WalletProcess,
    delete_topics,
    platform_balances,
    start_service,
    start_wallet,
    wallet_balances,
)
from bench.stats import percentile, spread
from bench.workload import WalletKey
from shared.http import make_token
from shared.infra import ensure_topics, free_port
from shared.messaging import CommandResult
from shared.messaging.topics import Topics
from shared.money import get_currency
from shared.wallet_client import WalletClient
from trading.spot.domain.book import Order, OrderBook, OrderType, Side
from trading.spot.domain.markets import MARKETS, Fees

# What the end-to-end run trades (each taker buys AMOUNT at PRICE from one maker) and funds; the
# contract's default fee rates, which the run sets explicitly (SPOT_MAKER_FEE_RATE, …_TAKER_…).
AMOUNT: Final = Decimal("0.00123")  # 61.50 GBP a trade: the maker's fee, 0.0615, rounds up
PRICE: Final = Decimal("50000.00")
SELLER_BTC: Final = Decimal("1")
BUYER_GBP: Final = Decimal("100000.00")
MAKER_FEE_RATE: Final = Decimal("0.001")
TAKER_FEE_RATE: Final = Decimal("0.002")
TRADERS: Final = 20  # sellers, and as many buyers; order n belongs to trader n % TRADERS
FEES: Final = "platform:fees"


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


def _fee(amount: Decimal, rate: Decimal, currency: str) -> Decimal:
    """The contract's fee: amount × rate, rounded up to the currency's scale."""
    step = Decimal(1).scaleb(-get_currency(currency).scale)
    return (amount * rate).quantize(step, rounding=ROUND_CEILING)


@dataclass(frozen=True, slots=True)
class TradeModel:
    """One trade of AMOUNT BTC at PRICE as the contract computes it: the buyer (taker) pays
    `quote` GBP and its fee comes out of the BTC it receives; the seller (maker) delivers AMOUNT
    BTC and its fee comes out of the GBP it receives."""

    quote: Decimal
    maker_fee: Decimal  # GBP
    taker_fee: Decimal  # BTC


def spot_model(
    maker_rate: Decimal = MAKER_FEE_RATE, taker_rate: Decimal = TAKER_FEE_RATE
) -> TradeModel:
    quote = AMOUNT * PRICE
    return TradeModel(quote, _fee(quote, maker_rate, "GBP"), _fee(AMOUNT, taker_rate, "BTC"))


@dataclass(slots=True)
class SpotFound:
    """What the system answered: every order as trading reports it (taker or maker), then the
    wallet's balances of every trader and of the platform accounts."""

    takers: list[dict[str, Any]] = field(default_factory=list)
    makers: list[dict[str, Any]] = field(default_factory=list)
    balances: dict[WalletKey, tuple[Decimal, Decimal]] = field(default_factory=dict)
    platform: dict[WalletKey, Decimal] = field(default_factory=dict)


def _wrong_order(order: dict[str, Any], fee: Decimal, fee_currency: str) -> str | None:
    expected = [(PRICE, AMOUNT, fee, fee_currency)]
    fills = [
        (Decimal(f["price"]), Decimal(f["amount"]), Decimal(f["fee"]), f["fee_currency"])
        for f in order.get("fills", [])
    ]
    if order.get("status") != "filled" or fills != expected:
        return (
            f"order {order.get('order_id')}: {order.get('status')} with fills {fills},"
            f" model filled with {expected}"
        )
    return None


def wrong_against(model: TradeModel, found: SpotFound) -> list[str]:
    """Every way what ran differs from the contract: an empty list when it is right."""
    wrong = [
        w
        for w in (
            *(_wrong_order(order, model.taker_fee, "BTC") for order in found.takers),
            *(_wrong_order(order, model.maker_fee, "GBP") for order in found.makers),
        )
        if w is not None
    ]
    zero = Decimal(0)
    trades = len(found.takers)
    expected: dict[WalletKey, tuple[Decimal, Decimal]] = {}
    for n in range(TRADERS):
        count = trades // TRADERS + (n < trades % TRADERS)
        expected[(f"seller{n}", "BTC")] = (SELLER_BTC - count * AMOUNT, zero)
        expected[(f"seller{n}", "GBP")] = (count * (model.quote - model.maker_fee), zero)
        expected[(f"buyer{n}", "GBP")] = (BUYER_GBP - count * model.quote, zero)
        expected[(f"buyer{n}", "BTC")] = (count * (AMOUNT - model.taker_fee), zero)
    for (user, currency), balance in expected.items():
        held = found.balances.get((user, currency), (zero, zero))
        if held != balance:
            wrong.append(f"{user} {currency}: (available, locked) {held}, model {balance}")
    for key, total in {
        (FEES, "GBP"): trades * model.maker_fee,
        (FEES, "BTC"): trades * model.taker_fee,
    }.items():
        if found.platform.get(key, zero) != total:
            wrong.append(f"{key[0]} {key[1]}: {found.platform.get(key)}, model {total}")
    return wrong


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
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "MONGODB_URL": mongodb_url,
        "TRADING_MONGODB_DATABASE": f"bench_spot_{uuid.uuid4().hex[:8]}",
        "AUTH_JWT_SECRET": JWT_SECRET,
        "TRADING_HTTP_PORT": str(port),
        "SPOT_MAKER_FEE_RATE": str(MAKER_FEE_RATE),
        "SPOT_TAKER_FEE_RATE": str(TAKER_FEE_RATE),
        "TRADING_RESULTS_SESSION_TIMEOUT_MS": "3000",
        "TRADING_RESULTS_HEARTBEAT_INTERVAL_MS": "500",
        "SPOT_MATCHER_SESSION_TIMEOUT_MS": "3000",
        "SPOT_MATCHER_HEARTBEAT_INTERVAL_MS": "500",
        "LOG_LEVEL": "WARNING",
    }
    log = log_dir / f"trading-{topics.prefix.strip('.')}.log" if log_dir else None
    trading = await start_service(
        "trading", (sys.executable, "-m", "trading"), env, port, log, 120.0
    )
    try:
        async with (
            WalletClient(bootstrap, topics=topics, timeout=120) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http,
        ):
            run = await _drive(client, http, bootstrap, topics, takers, concurrency)
        traders = [f"{side}{n}" for side in ("seller", "buyer") for n in range(TRADERS)]
        run.found.balances = {
            key: (available, locked)
            for key, (available, locked, _) in (await wallet_balances(wallet_port, traders)).items()
        }
        run.found.platform = await platform_balances(wallet_port)
        run.wrong = wrong_against(spot_model(), run.found)
        return run
    finally:
        trading.stop()
        wallet.stop()
        await delete_topics(bootstrap, topics)


def _auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, ())}"}


async def _drive(
    client: WalletClient,
    http: httpx.AsyncClient,
    bootstrap: str,
    topics: Topics,
    takers: int,
    concurrency: int,
) -> SpotRun:
    sellers = [f"seller{n}" for n in range(TRADERS)]
    buyers = [f"buyer{n}" for n in range(TRADERS)]
    amount, price = AMOUNT, PRICE
    funding = [
        client.credit(
            user_id=user,
            currency="BTC" if user.startswith("seller") else "GBP",
            amount=str(SELLER_BTC if user.startswith("seller") else BUYER_GBP),
            transaction_type="deposit_nowpayments"
            if user.startswith("seller")
            else "deposit_bank_transfer",
            reference_id=f"bench-fund-{user}",
        )
        for user in sellers + buyers
    ]
    for result in await asyncio.gather(*funding):
        assert result is not None
        if result.status != "applied":
            raise AssertionError(f"funding refused: {result}")
    gate = asyncio.Semaphore(concurrency)

    async def place(user: str, side: str) -> tuple[str, float]:
        async with gate:
            at = time.time()
            response = await http.post(
                "/api/trading/execute",
                json={
                    "pair": "BTC-GBP",
                    "side": side,
                    "type": "limit",
                    "amount": str(amount),
                    "price": str(price),
                },
                headers=_auth(user),
            )
            if response.status_code != 202:
                raise AssertionError(response.text)
            return str(response.json()["order_id"]), at

    async def status_of(user: str, order_id: str) -> dict[str, Any]:
        response = await http.get(f"/api/trading/orders/{order_id}", headers=_auth(user))
        body: dict[str, Any] = response.json()
        return body

    async def resting_asks() -> Decimal:
        response = await http.get("/api/trading/orderbook/BTC-GBP")
        return sum((Decimal(a) for _, a in response.json()["asks"]), Decimal(0))

    # makers rest first (untimed): the book's asks show all of them
    makers = await asyncio.gather(*(place(sellers[n % TRADERS], "sell") for n in range(takers)))
    deadline = time.time() + 120
    while (resting := await resting_asks()) != amount * takers:
        if time.time() > deadline:
            statuses: Counter[str] = Counter()
            for n, (order_id, _) in enumerate(makers):
                statuses[(await status_of(sellers[n % TRADERS], order_id))["status"]] += 1
            raise AssertionError(f"the makers did not all rest: {resting} in the book, {statuses}")
        await asyncio.sleep(0.2)
    settled: dict[str, float] = {}
    reader = await _settle_reader(bootstrap, topics)
    listening = asyncio.create_task(_collect(reader, settled))
    try:
        started = time.time()
        placed = await asyncio.gather(*(place(buyers[n % TRADERS], "buy") for n in range(takers)))
        # timed until the wallet settled a trade per taker (nothing else polls meanwhile)
        deadline = time.time() + 300
        while len(settled) < takers:
            if time.time() > deadline:
                statuses = Counter()
                for n, (order_id, _) in enumerate(placed):
                    statuses[(await status_of(buyers[n % TRADERS], order_id))["status"]] += 1
                raise AssertionError(f"{len(settled)} of {takers} trades settled; {statuses}")
            await asyncio.sleep(0.05)
    finally:
        listening.cancel()
        await reader.stop()
    found = SpotFound()
    found.takers = [
        await status_of(buyers[n % TRADERS], order_id) for n, (order_id, _) in enumerate(placed)
    ]
    found.makers = [
        await status_of(sellers[n % TRADERS], order_id) for n, (order_id, _) in enumerate(makers)
    ]
    trades: dict[str, str] = {}
    for (order_id, _), order in zip(placed, found.takers, strict=True):
        if order["status"] != "filled":
            raise AssertionError(f"taker {order_id} is {order['status']}")
        trades[order_id] = order["fills"][0]["trade_id"]
    ends = [settled[trades[order_id]] for order_id, _ in placed]
    latencies = [(settled[trades[o]] - at) * 1000 for o, at in placed]
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
