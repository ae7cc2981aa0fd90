"""Spot trading end to end: the REAL wallet (in process) and the trading service as a real
subprocess (`python -m trading`) over the embedded Kafka and MongoDB.

Two users trade with partial fills; a market order meets an empty side; a self-trade is refused;
the trading process is killed (SIGKILL) and stopped (SIGTERM) with orders resting, and the book
comes back with them and keeps matching; a cancel unlocks the remainder. After every step the
wallet's balances, platform:fees and each user's locked balance (= what their open orders hold)
are checked to the last unit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.infra.net import free_port
from shared.messaging.topics import Topics
from shared.wallet_client import WalletClient
from wallet.bootstrap import create_app as create_wallet_app
from wallet.settings import WalletSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = Decimal
OPEN = ("pending", "open", "partially_filled")


@dataclass
class Trading:
    """`python -m trading` as a child process."""

    env: dict[str, str]
    url: str
    process: asyncio.subprocess.Process | None = None

    async def start(self, http: httpx.AsyncClient) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trading",
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            assert self.process.returncode is None, "trading exited during startup"
            try:
                if (await http.get(f"{self.url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "trading not healthy in 90 s"
            await asyncio.sleep(0.2)

    async def stop(self, how: signal.Signals) -> int:
        assert self.process is not None
        if self.process.returncode is not None:
            return self.process.returncode
        self.process.send_signal(how)
        try:
            return await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


@dataclass
class System:
    trading: Trading
    wallet: str
    http: httpx.AsyncClient
    wallet_client: WalletClient
    auth: Callable[..., dict[str, str]]
    until: Callable[..., Awaitable[None]]

    async def deposit(self, user: str, currency: str, amount: str) -> None:
        kind = "deposit_bank_transfer" if currency == "GBP" else "deposit_nowpayments"
        result = await self.wallet_client.credit(
            user_id=user,
            currency=currency,
            amount=amount,
            transaction_type=kind,
            reference_id=f"{kind}:{user}:{currency}",
            result_timeout=60,
        )
        assert result is not None
        assert result.status == "applied", result

    async def balances(self, user: str) -> dict[str, tuple[Decimal, Decimal]]:
        """currency → (available, locked)"""
        response = await self.http.get(
            f"{self.wallet}/api/wallets/balances/{user}", headers=self.auth(user)
        )
        assert response.status_code == 200, response.text
        return {
            b["currency"]: (D(b["available_balance"]), D(b["locked_balance"]))
            for b in response.json()["balances"]
        }

    async def fees(self) -> dict[str, Decimal]:
        response = await self.http.get(
            f"{self.wallet}/api/wallets/platform-balances", headers=self.auth("ops", "admin")
        )
        assert response.status_code == 200, response.text
        return {
            a["currency"]: D(a["balance"])
            for a in response.json()["accounts"]
            if a["account"] == "platform:fees"
        }

    async def place(self, user: str, **order: str) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.trading.url}/api/trading/execute", json=order, headers=self.auth(user)
        )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def order(self, user: str, order_id: str) -> dict[str, Any]:
        response = await self.http.get(
            f"{self.trading.url}/api/trading/orders/{order_id}", headers=self.auth(user)
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def settled(self, user: str, order_id: str, *statuses: str) -> dict[str, Any]:
        """The order once it reaches one of `statuses`."""
        seen: dict[str, Any] = {}

        async def reached() -> bool:
            seen.update(await self.order(user, order_id))
            return seen["status"] in statuses

        await self.until(reached, within=60)
        return seen

    async def book(self) -> dict[str, Any]:
        response = await self.http.get(f"{self.trading.url}/api/trading/orderbook/BTC-GBP")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return {"bids": body["bids"], "asks": body["asks"]}

    async def expect_balances(self, user: str, expected: dict[str, tuple[str, str]]) -> None:
        want = {c: (D(a), D(b)) for c, (a, b) in expected.items()}
        seen: dict[str, tuple[Decimal, Decimal]] = {}

        async def equal() -> bool:
            seen.update(await self.balances(user))
            return {c: seen.get(c) for c in want} == want

        try:
            await self.until(equal, within=60)
        except AssertionError:
            raise AssertionError(f"{user}: {seen} != {want}") from None

    async def locks_match_open_orders(self, user: str) -> None:
        """What the wallet holds for the user equals what their open orders still hold."""
        response = await self.http.get(
            f"{self.trading.url}/api/trading/orders",
            params={"status": "open"},
            headers=self.auth(user),
        )
        assert response.status_code == 200, response.text
        open_orders = response.json()["items"]
        assert all(o["status"] in OPEN for o in open_orders)
        balances = await self.balances(user)
        for currency in ("BTC", "GBP"):
            expected = sum(
                (
                    D(o["amount"]) - D(o["filled_amount"])
                    if o["side"] == "sell"
                    else (D(o["amount"]) - D(o["filled_amount"])) * D(o["price"])
                    for o in open_orders
                    if o["lock_currency"] == currency
                ),
                D(0),
            )
            assert balances.get(currency, (D(0), D(0)))[1] == expected, (currency, open_orders)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    mongo_database: AsyncDatabase[dict[str, Any]],
    serve_app: Callable[[Any, int], AbstractAsyncContextManager[str]],
    until: Callable[..., Awaitable[None]],
    jwt_secret: str,
    auth_headers: Callable[..., dict[str, str]],
) -> AsyncIterator[System]:
    wallet_port, trading_port = free_port(), free_port()
    wallet_database = f"{mongo_database.name[:50]}_wallet"
    wallet = create_wallet_app(
        WalletSettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_topic_prefix=kafka_topics.prefix,
            mongodb_url=mongodb_url,
            auth_jwt_secret=jwt_secret,
            WALLET_MONGODB_DATABASE=wallet_database,
            WALLET_CONSUMER_SESSION_TIMEOUT_MS=3000,
            WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS=500,
        )
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka_topics.prefix,
        "MONGODB_URL": mongodb_url,
        "TRADING_MONGODB_DATABASE": mongo_database.name,
        "AUTH_JWT_SECRET": jwt_secret,
        "TRADING_HTTP_PORT": str(trading_port),
        "TRADING_RESULTS_CONSUMER_GROUP": f"spot-e2e-{trading_port}",
        "TRADING_RESULTS_SESSION_TIMEOUT_MS": "3000",
        "TRADING_RESULTS_HEARTBEAT_INTERVAL_MS": "500",
        "SPOT_MATCHER_GROUP": f"spot-e2e-matcher-{trading_port}",
        "SPOT_MATCHER_SESSION_TIMEOUT_MS": "3000",
        "SPOT_MATCHER_HEARTBEAT_INTERVAL_MS": "500",
        # A cancel answers 200 once the wallet unlocked: room for a loaded machine.
        "SPOT_CANCEL_WAIT_SECONDS": "15",
        "TRADING_OUTBOX_RELAY_INTERVAL_SECONDS": "2",
        "PRICE_FEED_INTERVAL_SECONDS": "5",
    }
    trading = Trading(env, f"http://127.0.0.1:{trading_port}")
    try:
        async with (
            serve_app(wallet, wallet_port) as wallet_url,
            httpx.AsyncClient(timeout=30.0) as http,
            WalletClient(kafka_bootstrap_servers, topics=kafka_topics, timeout=60) as client,
        ):

            async def healthy() -> bool:
                return (await http.get(f"{wallet_url}/healthz")).status_code == 200

            await until(healthy, within=60)
            await trading.start(http)
            try:
                yield System(trading, wallet_url, http, client, auth_headers, until)
            finally:
                await trading.stop(signal.SIGTERM)
    finally:
        await mongo_client.drop_database(wallet_database)


async def test_two_users_trade_through_the_book_and_the_wallet(system: System) -> None:
    await system.deposit("alice", "BTC", "1")
    await system.deposit("bob", "GBP", "10000.00")

    # a market order on an empty side: its lock comes back whole
    empty = await system.place(
        "bob", pair="BTC-GBP", side="buy", type="market", quote_amount="100.00"
    )
    assert empty["status"] == "pending"
    failed = await system.settled("bob", empty["order_id"], "failed")
    assert (failed["reason"], failed["filled_amount"], failed["fills"]) == ("no_liquidity", "0", [])
    await system.expect_balances("bob", {"GBP": ("10000", "0")})
    by_amount = await system.place("bob", pair="BTC-GBP", side="buy", type="market", amount="0.01")
    assert (by_amount["status"], by_amount["reason"]) == (
        "failed",
        "no_liquidity",
    )  # nothing to price

    # a lock the wallet refuses ends the order failed, with the wallet's reason
    broke = await system.place(
        "carol", pair="BTC-GBP", side="buy", type="limit", amount="0.01", price="100.00"
    )
    refused_lock = await system.settled("carol", broke["order_id"], "failed")
    assert refused_lock["reason"] == "insufficient_funds"

    # two asks rest; a bid takes the first and part of the second at the makers' prices
    ask1 = await system.place(
        "alice", pair="BTC-GBP", side="sell", type="limit", amount="0.01", price="52000.00"
    )
    ask2 = await system.place(
        "alice", pair="BTC-GBP", side="sell", type="limit", amount="0.02", price="52100.00"
    )
    await system.settled("alice", ask1["order_id"], "open")
    await system.settled("alice", ask2["order_id"], "open")
    assert await system.book() == {"bids": [], "asks": [["52000.00", "0.01"], ["52100.00", "0.02"]]}
    bid = await system.place(
        "bob", pair="BTC-GBP", side="buy", type="limit", amount="0.015", price="52100.00"
    )
    filled = await system.settled("bob", bid["order_id"], "filled")
    # The contract: a status that follows a wallet result is shown once the wallet applied it.
    # Read at once, no waiting: before, the order read filled while the wallet had yet to settle.
    assert await system.balances("bob") == {"GBP": (D("9219.5"), D(0)), "BTC": (D("0.01497"), D(0))}
    assert await system.balances("alice") == {
        "GBP": (D("779.71"), D(0)),
        "BTC": (D("0.97"), D("0.015")),
    }
    assert [
        (f["price"], f["amount"], f["fee"], f["fee_currency"], f["liquidity"])
        for f in filled["fills"]
    ] == [
        ("52000.00", "0.01", "0.00002", "BTC", "taker"),
        ("52100.00", "0.005", "0.00001", "BTC", "taker"),
    ]
    first = await system.settled("alice", ask1["order_id"], "filled")
    assert [(f["fee"], f["fee_currency"], f["liquidity"]) for f in first["fills"]] == [
        ("0.52", "GBP", "maker")
    ]
    second = await system.settled("alice", ask2["order_id"], "partially_filled")
    assert (second["filled_amount"], second["fills"][0]["fee"]) == ("0.005", "0.27")  # 0.2605 up
    assert await system.book() == {"bids": [], "asks": [["52100.00", "0.015"]]}
    # bob locked 781.50, paid 520.00 + 260.50: the 1.00 he saved below his limit is unlocked
    await system.expect_balances("bob", {"GBP": ("9219.5", "0"), "BTC": ("0.01497", "0")})
    await system.expect_balances("alice", {"GBP": ("779.71", "0"), "BTC": ("0.97", "0.015")})
    assert await system.fees() == {"GBP": D("0.79"), "BTC": D("0.00003")}

    # a self-trade: alice's bid would meet her own ask; her remainder is cancelled and unlocked
    own = await system.place(
        "alice", pair="BTC-GBP", side="buy", type="limit", amount="0.001", price="52100.00"
    )
    refused = await system.settled("alice", own["order_id"], "cancelled")
    assert (refused["reason"], refused["fills"]) == ("self_trade", [])
    await system.expect_balances("alice", {"GBP": ("779.71", "0"), "BTC": ("0.97", "0.015")})

    # orders resting across a SIGKILL and a SIGTERM of the trading process
    bid_request = {"pair": "BTC-GBP", "side": "buy", "type": "limit", "amount": "0.002"}
    rest = await system.place("bob", **bid_request, price="51000.00", client_order_id="bob-1")
    # the same request again (a double click, a retry): the same order, locked once
    again_placed = await system.place(
        "bob", **bid_request, price="51000.00", client_order_id="bob-1"
    )
    assert again_placed["order_id"] == rest["order_id"]
    other = await system.http.post(
        f"{system.trading.url}/api/trading/execute",
        json={**bid_request, "price": "51000.01", "client_order_id": "bob-1"},
        headers=system.auth("bob"),
    )
    assert (other.status_code, other.json()["error"]["code"]) == (409, "idempotency_conflict")
    await system.settled("bob", rest["order_id"], "open")
    before = await system.book()
    assert before == {"bids": [["51000.00", "0.002"]], "asks": [["52100.00", "0.015"]]}
    assert await system.trading.stop(signal.SIGKILL) == -signal.SIGKILL
    await system.trading.start(system.http)
    assert await system.book() == before
    taker = await system.place("alice", pair="BTC-GBP", side="sell", type="market", amount="0.001")
    sold = await system.settled("alice", taker["order_id"], "filled")
    assert [(f["price"], f["amount"], f["fee"]) for f in sold["fills"]] == [
        ("51000.00", "0.001", "0.11")
    ]
    partly = await system.settled("bob", rest["order_id"], "partially_filled")
    assert partly["filled_amount"] == "0.001"
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert await system.trading.stop(signal.SIGTERM) == -signal.SIGTERM
    await system.trading.start(system.http)
    assert await system.book() == {"bids": [["51000.00", "0.001"]], "asks": [["52100.00", "0.015"]]}
    # 0.001 × 51000 = 51.00: alice gets 51.00 − 0.11 (taker fee 0.102 up); bob 0.001 − 0.000001
    await system.expect_balances("alice", {"GBP": ("830.6", "0"), "BTC": ("0.969", "0.015")})
    await system.expect_balances("bob", {"GBP": ("9117.5", "51"), "BTC": ("0.015969", "0")})

    # cancels: the remainders are unlocked, the book is empty again
    response = await system.http.delete(
        f"{system.trading.url}/api/trading/orders/{ask2['order_id']}", headers=system.auth("alice")
    )
    assert (response.status_code, response.json()["status"]) == (200, "cancelled"), response.text
    # answered cancelled: the remainder is unlocked already (read at once, no waiting)
    assert (await system.balances("alice"))["BTC"] == (D("0.984"), D(0))
    cancelled = await system.settled("alice", ask2["order_id"], "cancelled")
    assert (cancelled["reason"], cancelled["filled_amount"]) == ("user_cancelled", "0.005")
    again = await system.http.delete(
        f"{system.trading.url}/api/trading/orders/{ask2['order_id']}", headers=system.auth("alice")
    )
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")
    stranger = await system.http.delete(
        f"{system.trading.url}/api/trading/orders/{rest['order_id']}", headers=system.auth("alice")
    )
    assert stranger.status_code == 404
    done = await system.http.delete(
        f"{system.trading.url}/api/trading/orders/{ask1['order_id']}", headers=system.auth("alice")
    )
    assert (done.status_code, done.json()["error"]["code"]) == (409, "order_not_open")
    await system.expect_balances("alice", {"GBP": ("830.6", "0"), "BTC": ("0.984", "0")})
    assert await system.book() == {"bids": [["51000.00", "0.001"]], "asks": []}
    # an order that expires: cancelled by the service itself and unlocked
    brief = await system.place(
        "alice",
        pair="BTC-GBP",
        side="sell",
        type="limit",
        amount="0.001",
        price="60000.00",
        expires_in_seconds=1,  # type: ignore[arg-type]
    )
    assert brief["expires_at"] is not None
    expired = await system.settled("alice", brief["order_id"], "cancelled")
    assert (expired["reason"], expired["filled_amount"]) == ("expired", "0")
    # Cancelling it now: it is cancelled already, and says why (it answered 409 order_not_open).
    late = await system.http.delete(
        f"{system.trading.url}/api/trading/orders/{brief['order_id']}", headers=system.auth("alice")
    )
    assert (late.status_code, late.json()["status"], late.json()["reason"]) == (
        200,
        "cancelled",
        "expired",
    )
    await system.expect_balances("alice", {"GBP": ("830.6", "0"), "BTC": ("0.984", "0")})
    for user in ("alice", "bob"):
        await system.locks_match_open_orders(user)
    assert await system.fees() == {"GBP": D("0.9"), "BTC": D("0.000031")}
    closed = await system.http.get(
        f"{system.trading.url}/api/trading/orders",
        params={"status": "closed"},
        headers=system.auth("alice"),
    )
    assert {o["order_id"] for o in closed.json()["items"]} == {
        ask1["order_id"],
        ask2["order_id"],
        own["order_id"],
        taker["order_id"],
        brief["order_id"],
    }
    every = await system.http.get(
        f"{system.trading.url}/api/trading/orders", headers=system.auth("alice")
    )
    empty = await system.http.get(
        f"{system.trading.url}/api/trading/orders?status=", headers=system.auth("alice")
    )
    assert (empty.status_code, empty.json()) == (200, every.json())  # empty is no filter
    assert {o["order_id"] for o in closed.json()["items"]} <= {
        o["order_id"] for o in every.json()["items"]
    }
