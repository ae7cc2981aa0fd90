"""Two trading processes of one deployment trade spot together, and one of them crashes.

The wallet (`python -m wallet`, memory store) and two `python -m trading` processes, in one
consumer group on trading.orders, over the embedded Kafka and one MongoDB database. Each process
writes the markets of the partitions it owns (it logs them, `spot.markets_owned`): BTC-GBP and
ETH-GBP fall to different ones. Makers, then takers, of both markets are posted to both processes
in turn, so each process takes orders of a market the other matches. Then the owner of BTC-GBP is
killed (SIGKILL) the moment it has stored the decision of its next fill, before it sent it to the
wallet (`trading_process.py` hangs there and says so);
the remaining takers go to the survivor, which takes over the dead one's partitions and finishes
its market from the store.

Once nothing is in flight (every order closed, every stored decision dispatched, every wallet
command applied), everything is checked against the contract's model (`bench.spot`, as the spot
bench checks its runs): every order filled by exactly one fill at the maker's price with its fee,
each trade on one buy and one sell and settled by the wallet in one ledger transaction, every
trader's available and locked balances as the wallet reports them, and platform:fees. A fill
decided twice, an order left open or a lock left behind is a difference.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from bench.pipeline import WalletProcess, start_service, start_wallet
from bench.spot import (
    SpotFound,
    fund,
    order_of,
    place,
    read_wallet,
    resting_asks,
    spot_model,
    trading_env,
    wrong_against,
)
from shared.infra import ManagedProcess, free_port
from shared.messaging.topics import DEFAULT_PARTITIONS, Topics
from shared.testing.services import eventually, until_healthy
from shared.wallet_client import WalletClient
from trading.spot.domain.markets import MARKETS
from trading.spot.matcher import partition_of

pytestmark = pytest.mark.slow

MODELS: Final = (
    spot_model(),  # BTC-GBP: 0.00123 at 50,000.00
    spot_model(pair="ETH-GBP", amount=Decimal("0.0123"), price=Decimal("2000.00")),
)
TRADERS: Final = 4  # sellers, and as many buyers
ORDERS: Final = 8  # makers per market, and as many takers
FIRST_WAVE: Final = 3  # takers per market posted to both processes before the crash
VICTIM_MARKET: Final = "BTC-GBP"
CLOSED: Final = frozenset({"filled", "cancelled", "failed"})
Placed = tuple[str, str]  # (user, order id)


def owned(log: Path) -> frozenset[str] | None:
    """The markets the process owns since its latest rebalance, as it logged them."""
    markets = None
    for line in log.read_text(errors="replace").splitlines():
        if '"spot.markets_owned"' in line:
            markets = frozenset(json.loads(line)["markets"])
    return markets


async def holds(probe: Callable[[], Awaitable[bool]], within: float) -> bool:
    """Whether `probe` comes true within `within` s (the checks then say what is wrong)."""
    try:
        await eventually(probe, within=within, interval=0.2)
    except AssertionError:
        return False
    return True


async def applied_so_far(client: WalletClient) -> None:
    """Wait until the wallet applied every command published so far: it reads each partition of
    wallet.commands in order, so once it answered a credit sent behind them on each, it has."""
    behind: dict[int, str] = {}
    for n in itertools.count():
        behind.setdefault(partition_of(f"marker{n}", range(DEFAULT_PARTITIONS)), f"marker{n}")
        if len(behind) == DEFAULT_PARTITIONS:
            break
    answers = await asyncio.gather(
        *(
            client.credit(
                user_id=user,
                currency="GBP",
                amount="0.01",
                transaction_type="deposit_bank_transfer",
                reference_id=f"{user}:{uuid.uuid4().hex}",
            )
            for user in behind.values()
        )
    )
    assert all(a is not None and a.status == "applied" for a in answers), answers


async def test_two_trading_processes_trade_through_a_crash(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    tmp_path: Path,
) -> None:
    bootstrap, topics = kafka_bootstrap_servers, kafka_topics
    began = time.monotonic()
    wallet, wallet_port = await start_wallet(
        bootstrap, topics, 500, WalletProcess(log_dir=tmp_path)
    )
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"trading-{n}.log" for n in range(2)]
    armed = [tmp_path / f"armed-{n}" for n in range(2)]
    hanging = [tmp_path / f"hanging-{n}" for n in range(2)]

    async def start(n: int) -> ManagedProcess:
        env = trading_env(bootstrap, topics, mongodb_url, mongo_database.name, ports[n])
        env["LOG_LEVEL"] = "INFO"  # spot.markets_owned
        # `python -m trading` that hangs before sending a fill of the victim's market, once armed
        env["TRADING_HANG_ARMED"] = str(armed[n])
        env["TRADING_HANG_MARKER"] = str(hanging[n])
        env["TRADING_HANG_PAIR"] = VICTIM_MARKET
        argv = (sys.executable, str(Path(__file__).with_name("trading_process.py")))
        return await start_service(f"trading-{n}", argv, env, ports[n], logs[n], 90.0)

    started = await asyncio.gather(start(0), start(1), return_exceptions=True)
    trading = [p for p in started if isinstance(p, ManagedProcess)]
    try:
        assert len(trading) == 2, started

        async def split() -> bool:
            mine, theirs = owned(logs[0]), owned(logs[1])
            return bool(mine and theirs and not mine & theirs and mine | theirs == set(MARKETS))

        await eventually(split, within=30, interval=0.1)
        owners = {pair: n for n in range(2) for pair in owned(logs[n]) or ()}
        print(f"\nready in {time.monotonic() - began:.1f} s; owners: {owners}")
        assert owners["BTC-GBP"] != owners["ETH-GBP"]
        victim = owners[VICTIM_MARKET]
        survivor = 1 - victim
        async with (
            WalletClient(bootstrap, topics=topics, timeout=60) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", timeout=30) as first,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[1]}", timeout=30) as second,
        ):
            http = (first, second)
            for process in http:  # ready again after the rebalance that split the partitions
                await until_healthy(process, "", within=30)
            await fund(client, MODELS, TRADERS)

            async def post(side: str, numbers: range, to: Callable[[int], int]) -> list[Placed]:
                """Order n of each market, by trader n % TRADERS, to process to(n + market)."""
                user = "seller" if side == "sell" else "buyer"

                async def one(n: int, k: int) -> Placed:
                    by = f"{user}{n % TRADERS}"
                    return by, await place(http[to(n + k)], MODELS[k], by, side)

                return list(
                    await asyncio.gather(*(one(n, k) for n in numbers for k in range(len(MODELS))))
                )

            def alternately(n: int) -> int:
                return n % 2

            makers = await post("sell", range(ORDERS), alternately)

            async def rested() -> bool:
                books = [await resting_asks(first, m.pair) for m in MODELS]
                return books == [ORDERS * m.amount for m in MODELS]

            await eventually(rested, within=30, interval=0.1)
            live = http[survivor]

            async def read(placed: list[Placed]) -> list[dict[str, Any]]:
                return [await order_of(live, user, order_id) for user, order_id in placed]

            async def closed(placed: list[Placed]) -> bool:
                return all(o["status"] in CLOSED for o in await read(placed))

            # the first takers to both processes in turn: each matches what the other took
            takers = await post("buy", range(FIRST_WAVE), alternately)
            await eventually(partial(closed, takers), within=30, interval=0.1)
            # one more to the survivor; the owner of BTC-GBP is killed the moment it has stored
            # its decision (a fill) and is about to send it: not sent to the wallet, not marked
            # sent, the orders not projected, the message not committed
            batches = mongo_database["spot_batches"]
            armed[victim].touch()
            takers += await post("buy", range(FIRST_WAVE, FIRST_WAVE + 1), lambda _: survivor)

            async def about_to_send() -> bool:
                return hanging[victim].exists()

            await eventually(about_to_send, within=30, interval=0.01)
            os.kill(trading[victim].pid, signal.SIGKILL)
            crashed = time.monotonic()
            assert trading[victim].popen.wait(10) == -signal.SIGKILL
            trade_id = hanging[victim].read_text()
            last = await batches.find_one({"pair": VICTIM_MARKET}, sort=[("last", -1)])
            assert last is not None
            assert last["dispatched"] is False, last
            print(f"killed with the batch of {trade_id} stored and not sent")
            # the rest to the survivor, which takes the dead one's markets over
            takers += await post("buy", range(FIRST_WAVE + 1, ORDERS), lambda _: survivor)

            async def taken_over() -> bool:
                return owned(logs[survivor]) == set(MARKETS)

            await eventually(taken_over, within=30, interval=0.1)
            print(f"the survivor owns every market {time.monotonic() - crashed:.1f} s on")

            async def dispatched() -> bool:
                return not await batches.count_documents({"dispatched": False})

            wrong = []
            if not await holds(partial(closed, makers + takers), 30):
                wrong.append("orders still open")
            if not await holds(dispatched, 30):
                wrong.append("decisions not sent to the wallet")
            # Everything sent to the wallet applied: nothing can move any more, so a fill that
            # came twice could not hide behind a check made too early.
            await applied_so_far(client)
            found = SpotFound(takers=await read(takers), makers=await read(makers))
            await read_wallet(found, wallet_port, TRADERS)
            wrong += wrong_against(MODELS, found, TRADERS)
            assert not wrong, "\n".join(wrong)
            print(f"{len(makers + takers)} orders checked; {time.monotonic() - began:.1f} s")
    finally:
        for process in trading:
            process.stop()
        wallet.stop()
