"""The P2P and trading services under the input battery, running for real: the wallet, P2P and
trading apps on loopback ports over the embedded Kafka and MongoDB, with the objects the battery
needs (an escrowed P2P trade, a resting spot order, a savings transfer, quotes and a swap) created
by OWNER through the services themselves, funded by credits the real wallet applies.

They run on an event loop of their own, in a thread: schemathesis's tests are synchronous and
block the test's loop, and the services must keep answering while they do."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Awaitable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, TypeVar

import httpx

from p2p.bootstrap import build_p2p, create_p2p_app
from p2p.settings import P2pSettings
from shared.http import make_token
from shared.infra.net import free_port
from shared.messaging.topics import Topics
from shared.mongo import connect
from shared.testing.services import eventually, serving, until_healthy
from shared.wallet_client import WalletClient
from tests.reliability.services import OWNER, AmountRoute, Body, Service
from trading.bootstrap import FEATURES, build_service, create_trading_app
from trading.prices.entrypoints import build_prices_feature
from trading.prices.settings import PriceSettings
from trading.settings import TradingSettings
from wallet.bootstrap import create_app as create_wallet_app
from wallet.settings import WalletSettings

SECRET: Final = "reliability-battery-jwt-secret-of-at-least-32-bytes"
# The P2P buyer of OWNER's trade: OTHER stays an outsider to it.
BUYER: Final = "carol"
T = TypeVar("T")
# OWNER's Idempotency-Key for what they create with one: another user sending it gets nothing of it.
KEY: Final = "battery-owner-key"


class Loop:
    """An event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-services")
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


def token(user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(SECRET, user, roles)}"}


KEYED: Final = {**token(OWNER), "Idempotency-Key": KEY}


async def answer(response: Awaitable[httpx.Response], status: int) -> dict[str, Any]:
    got = await response
    assert got.status_code == status, got.text
    body: dict[str, Any] = got.json()
    return body


async def until_status(http: httpx.AsyncClient, path: str, *wanted: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update((await http.get(path, headers=token(OWNER))).json())
        return seen.get("status") in wanted

    await eventually(reached, within=60, interval=0.2)
    return seen


async def start(
    stack: contextlib.AsyncExitStack, kafka: str, topics: Topics, mongodb_url: str, database: str
) -> dict[str, Service]:
    """Start the three services under `stack` and create what the battery reads and acts on."""
    run = uuid.uuid4().hex[:8]
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka,
        "kafka_topic_prefix": topics.prefix,
        "mongodb_url": mongodb_url,
        "auth_jwt_secret": SECRET,
    }
    wallet_app = create_wallet_app(
        WalletSettings(
            **common,
            WALLET_MONGODB_DATABASE=f"{database}_wallet",
            WALLET_CONSUMER_SESSION_TIMEOUT_MS=3000,
            WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS=500,
        )
    )
    p2p_app = create_p2p_app(
        build_p2p(
            P2pSettings(
                **common,
                p2p_mongodb_database=f"{database}_p2p",
                p2p_results_consumer_group=f"p2p-battery-{run}",
                p2p_results_session_timeout_ms=3000,
                p2p_results_heartbeat_interval_ms=500,
            )
        )
    )
    prices = partial(build_prices_feature, settings=PriceSettings(price_feed_interval_seconds=0.5))
    trading_app = create_trading_app(
        build_service(
            TradingSettings(
                **common,
                trading_mongodb_database=f"{database}_trading",
                TRADING_RESULTS_CONSUMER_GROUP=f"trading-battery-{run}",
                TRADING_RESULTS_SESSION_TIMEOUT_MS=3000,
                TRADING_RESULTS_HEARTBEAT_INTERVAL_MS=500,
            ),
            features=[prices if f is build_prices_feature else f for f in FEATURES],
        )
    )
    mongo = connect(mongodb_url)

    async def drop_databases() -> None:
        for service in ("wallet", "p2p", "trading"):
            await mongo.drop_database(f"{database}_{service}")
        await mongo.close()

    # Registered first, so it runs last: after every service stopped.
    stack.push_async_callback(drop_databases)
    http = await stack.enter_async_context(httpx.AsyncClient(timeout=30.0))
    urls = {}
    for name, app in (("wallet", wallet_app), ("p2p", p2p_app), ("trading", trading_app)):
        urls[name] = await stack.enter_async_context(serving(app, free_port()))
    for url in urls.values():
        await until_healthy(http, url, within=90)
    async with WalletClient(kafka, topics=topics, timeout=30) as wallet:
        for currency, amount, kind in (
            ("BTC", "1", "deposit_nowpayments"),
            ("GBP", "1000.00", "deposit_bank_transfer"),
            ("USDT", "100", "deposit_nowpayments"),
        ):
            credited = await wallet.credit(
                user_id=OWNER,
                currency=currency,
                amount=amount,
                transaction_type=kind,
                reference_id=f"battery:{OWNER}:{currency}",
            )
            assert credited is not None
            assert credited.status == "applied", credited
    return {
        "p2p": await p2p_service(
            httpx.AsyncClient(base_url=urls["p2p"], timeout=30.0), urls["p2p"]
        ),
        "trading": await trading_service(
            httpx.AsyncClient(base_url=urls["trading"], timeout=30.0), urls["trading"]
        ),
    }


OFFER: Final[Body] = {
    "currency": "BTC",
    "fiat_currency": "GBP",
    "price": "52000.00",
    "min_amount": "0.001",
    "max_amount": "0.5",
    "payment_methods": ["bank_transfer"],
    "payment_window_minutes": 60,
}


async def p2p_service(http: httpx.AsyncClient, url: str) -> Service:
    """OWNER sells: an offer, and a trade BUYER took from it, escrowed by the wallet."""
    async with http:
        prefix = "/api/p2p/enhanced"
        offer = await answer(http.post(f"{prefix}/offers", json=OFFER, headers=KEYED), 201)
        offer_id = offer["offer_id"]
        trade = await answer(
            http.post(
                f"{prefix}/create-trade",
                json={"offer_id": offer_id, "amount": "0.01"},
                headers=token(BUYER),
            ),
            202,
        )
        trade_id = trade["trade_id"]
        await until_status(http, f"{prefix}/trades/{trade_id}", "escrowed")
        # OWNER may not take their own offer: the amounts battery takes BUYER's.
        buyers = await answer(http.post(f"{prefix}/offers", json=OFFER, headers=token(BUYER)), 201)
    return Service(
        name="p2p",
        url=url,
        secret=SECRET,
        owned=(f"{prefix}/trades/{{id}}",),
        owned_ids={"id": trade_id},
        foreign_status=404,
        foreign_codes=frozenset({"trade_not_found"}),
        owned_actions=(
            *(
                ("POST", f"{prefix}/{action}", {"trade_id": trade_id}, 404)
                for action in ("mark-paid", "release-crypto", "dispute")
            ),
            ("POST", f"{prefix}/cancel-trade", {"trade_id": trade_id, "reason": "mine"}, 404),
            ("DELETE", f"{prefix}/offers/{offer_id}", None, 403),
        ),
        admin_only=(
            (
                "POST",
                f"{prefix}/resolve-dispute",
                {"trade_id": "tr_unknown", "outcome": "buyer"},
            ),
        ),
        owned_lists=((f"{prefix}/trades", trade_id),),
        owned_keys=((f"{prefix}/offers", OFFER, offer_id),),
        admin_refusal_code="admin_required",
        read_only=(f"{prefix}/trades/{trade_id}", f"{prefix}/trades"),
        amount_routes=(
            AmountRoute(f"{prefix}/offers", OFFER, ("price", "min_amount", "max_amount")),
            AmountRoute(
                f"{prefix}/create-trade", {"offer_id": buyers["offer_id"], "amount": "0.01"}
            ),
        ),
    )


SWAP: Final[Body] = {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.001"}
EXPRESS: Final[Body] = {"fiat_currency": "GBP", "fiat_amount": "10.00", "crypto_currency": "BTC"}
ORDER: Final[Body] = {
    "pair": "BTC-GBP",
    "side": "buy",
    "type": "limit",
    "amount": "0.001",
    "price": "10000.00",
}
MARKET_BUY: Final[Body] = {"pair": "BTC-GBP", "side": "buy", "type": "market", "quote_amount": "10"}
SAVINGS: Final[Body] = {"currency": "USDT", "amount": "10", "direction": "to_savings"}
# Trading types its money fields as strings: any other JSON value fails request validation.
STRING_TYPED: Final = {"not a string": "validation_error"}


async def trading_service(http: httpx.AsyncClient, url: str) -> Service:
    """OWNER's resting spot order, completed savings transfer, a swap the wallet decided, and a
    swap and an express-buy quote nobody executed."""
    async with http:

        async def priced() -> bool:
            listed = (await http.get("/api/prices")).json()
            return {"BTC", "ETH"} <= {p["currency"] for p in listed.get("prices", [])}

        await eventually(priced, within=60, interval=0.2)
        order = await answer(
            http.post("/api/trading/execute", json=ORDER, headers=token(OWNER)), 202
        )
        order_id = order["order_id"]
        await until_status(http, f"/api/trading/orders/{order_id}", "open")
        transfer = await answer(
            http.post("/api/savings/transfer", json=SAVINGS, headers=KEYED), 202
        )
        transfer_id = transfer["transfer_id"]
        await until_status(http, f"/api/savings/transfers/{transfer_id}", "completed")
        executed = await answer(http.post("/api/swap/quote", json=SWAP, headers=token(OWNER)), 200)
        swap = await answer(
            http.post(
                "/api/swap/execute", json={"quote_id": executed["quote_id"]}, headers=token(OWNER)
            ),
            202,
        )
        swap_id = swap["swap_id"]
        # No liquidity was funded: the wallet refuses it, and it stays OWNER's failed swap.
        await until_status(http, f"/api/swap/{swap_id}", "completed", "failed")
        swap_quote = await answer(
            http.post("/api/swap/quote", json=SWAP, headers=token(OWNER)), 200
        )
        express_quote = await answer(
            http.post("/api/express-buy/quote", json=EXPRESS, headers=token(OWNER)), 200
        )
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    return Service(
        name="trading",
        url=url,
        secret=SECRET,
        owned=(
            "/api/trading/orders/{order_id}",
            "/api/savings/transfers/{transfer_id}",
            "/api/swap/{swap_id}",
        ),
        owned_ids={"order_id": order_id, "transfer_id": transfer_id, "swap_id": swap_id},
        foreign_status=404,
        foreign_codes=frozenset({"order_not_found", "transfer_not_found", "swap_not_found"}),
        owned_actions=(
            ("DELETE", f"/api/trading/orders/{order_id}", None, 404),
            ("POST", "/api/swap/execute", {"quote_id": swap_quote["quote_id"]}, 404),
            ("POST", "/api/express-buy/execute", {"quote_id": express_quote["quote_id"]}, 404),
        ),
        owned_keys=(("/api/savings/transfer", SAVINGS, transfer_id),),
        owned_lists=(
            ("/api/trading/orders", order_id),
            ("/api/trading/orders?status=open", order_id),
            ("/api/savings/positions", '"USDT"'),
        ),
        admin_only=(
            ("PUT", "/api/admin/prices", {"currency": "DOGE", "price": "0.10"}),
            ("DELETE", "/api/admin/prices/DOGE", None),
            (
                "POST",
                "/api/admin/liquidity",
                {
                    "currency": "ETH",
                    "amount": "1",
                    "reference_id": f"battery-{uuid.uuid4().hex[:8]}",
                },
            ),
            ("GET", "/api/admin/liquidity/unknown", None),
            ("POST", "/api/admin/savings/accrue", {"date": yesterday}),
        ),
        read_only=(
            f"/api/savings/transfers/{transfer_id}",
            f"/api/swap/{swap_id}",
            "/api/savings/positions",
            "/api/prices",
            "/api/trading/markets",
        ),
        amount_routes=(
            AmountRoute("/api/swap/quote", SWAP, ("from_amount",), STRING_TYPED),
            AmountRoute("/api/express-buy/quote", EXPRESS, ("fiat_amount",), STRING_TYPED),
            AmountRoute(
                "/api/trading/execute",
                ORDER,
                ("amount",),
                {
                    **STRING_TYPED,
                    "null": "amount_required",
                    "amount_too_precise": "amount_off_step",
                },
            ),
            AmountRoute(
                "/api/trading/execute",
                ORDER,
                ("price",),
                {**STRING_TYPED, "null": "price_required", "amount_too_precise": "price_off_tick"},
            ),
            AmountRoute(
                "/api/trading/execute",
                MARKET_BUY,
                ("quote_amount",),
                {**STRING_TYPED, "null": "amount_or_quote_amount"},
            ),
            AmountRoute("/api/savings/transfer", SAVINGS),
        ),
        public=frozenset(
            {"GET /api/prices", "GET /api/trading/markets", "GET /api/trading/orderbook/{pair}"}
        ),
    )


@contextlib.contextmanager
def live_services(
    kafka: str, topics: Topics, mongodb_url: str, database: str
) -> Iterator[dict[str, Service]]:
    loop = Loop()
    stack = contextlib.AsyncExitStack()
    try:
        yield loop.run(start(stack, kafka, topics, mongodb_url, database), timeout=300)
    finally:
        try:
            loop.run(stack.aclose(), timeout=60)
        finally:
            loop.close()
