"""Liquidity fundings are relayed as conversions are: a funding whose send failed is still
accepted (202 pending) and sent by the relay, one whose result was lost is asked about again, and
its state follows the wallet's result once. Over each store (memory and MongoDB), and through the
service's own background relay."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import create_app
from shared.messaging import CommandResult, WalletCommand
from shared.wallet_client import WalletClient
from trading.bootstrap import install_trading_errors
from trading.conversions.adapters.memory import MemoryFundings
from trading.conversions.adapters.mongo import MongoFundings
from trading.conversions.application import Funding, Fundings, Liquidity
from trading.conversions.domain import Status
from trading.conversions.entrypoints import build_conversions_feature, liquidity_routes
from trading.conversions.settings import ConversionSettings
from trading.feature import TradingContext
from trading.messaging import EventPublisher
from trading.prices.domain import PriceBook
from trading.settings import TradingSettings
from trading.testing import FakeClock, RecordingSender, result_of

type Database = AsyncDatabase[dict[str, Any]]

D = Decimal
MS = timedelta(milliseconds=1)
US = timedelta(microseconds=1)
GRACE = timedelta(seconds=5)
ASK_AGAIN = timedelta(seconds=ConversionSettings().conversion_ask_again_after_seconds)


def _fundings(store_database: Database | None) -> Fundings:
    return MemoryFundings() if store_database is None else MongoFundings(store_database)


def _funding(reference_id: str, clock: FakeClock, **changes: Any) -> Funding:
    funding = Funding(reference_id, "ETH", D("100"), "ops", Status.PENDING, None, clock())
    return replace(funding, **changes)


def _references(fundings: Any) -> list[str]:
    return [f.reference_id for f in fundings]


# The store: what was never published, and what has waited on the wallet since it was last sent


async def test_fundings_never_published_are_found_by_when_they_were_stored(
    store_database: Database | None, clock: FakeClock
) -> None:
    fundings = _fundings(store_database)
    t0 = clock()
    await fundings.add(_funding("early", clock))
    await fundings.add(_funding("late", clock, created_at=t0 + timedelta(seconds=5)))
    await fundings.add(_funding("published", clock))
    await fundings.add(_funding("settled", clock))
    await fundings.mark_published("published", t0 + MS)
    await fundings.settle("settled", "ops", Status.COMPLETED, None, t0)

    assert _references(await fundings.unpublished(t0 + timedelta(seconds=5))) == ["early"]
    assert _references(await fundings.unpublished(t0 + timedelta(seconds=6))) == [
        "early",
        "late",
    ]
    assert await fundings.unpublished(t0) == []
    # Stored within the millisecond of the cutoff: not before it.
    await fundings.add(
        _funding("sub-ms", clock, created_at=t0 + timedelta(seconds=9, microseconds=200))
    )
    assert "sub-ms" not in _references(
        await fundings.unpublished(t0 + timedelta(seconds=9, microseconds=900))
    )
    assert "sub-ms" in _references(await fundings.unpublished(t0 + timedelta(seconds=9) + MS))


async def test_published_fundings_await_the_wallet_since_they_were_last_sent(
    store_database: Database | None, clock: FakeClock
) -> None:
    fundings = _fundings(store_database)
    t0 = clock()
    await fundings.add(_funding("f1", clock))
    await fundings.add(_funding("never-published", clock))
    first = t0 + timedelta(seconds=1)
    await fundings.mark_published("f1", first)
    assert await fundings.awaiting_wallet(first) == []
    [waiting] = await fundings.awaiting_wallet(first + MS)
    assert waiting == await fundings.get("f1")
    assert _references(await fundings.unpublished(t0 + timedelta(hours=1))) == ["never-published"]
    # Only the first publication counts: it is not published (nor asked) again.
    await fundings.mark_published("f1", first + timedelta(seconds=30))
    assert _references(await fundings.awaiting_wallet(first + MS)) == ["f1"]
    asked = first + timedelta(seconds=40)
    await fundings.mark_asked("f1", asked)
    assert await fundings.awaiting_wallet(asked) == []
    assert await fundings.awaiting_wallet(asked + 999 * US) == []  # to the millisecond
    assert _references(await fundings.awaiting_wallet(asked + MS)) == ["f1"]
    await fundings.settle("f1", "ops", Status.COMPLETED, None, asked)
    assert await fundings.awaiting_wallet(asked + timedelta(hours=1)) == []
    await fundings.mark_asked("f1", t0)  # settled: still not awaited, whenever last asked
    assert await fundings.awaiting_wallet(asked + timedelta(hours=1)) == []
    # Marking an unknown funding stores nothing.
    await fundings.mark_published("f-unknown", t0)
    await fundings.mark_asked("f-unknown", t0)
    assert await fundings.get("f-unknown") is None


async def test_the_funding_relay_finds_fundings_oldest_first_a_page_after_another(
    store_database: Database | None, clock: FakeClock
) -> None:
    fundings = _fundings(store_database)
    t0 = clock()
    made = (("b", 2 * MS), ("c", MS), ("a", MS), ("d", 0 * MS), ("e", 3 * MS))
    for reference, at in made:
        await fundings.add(_funding(f"u-{reference}", clock, created_at=t0 + at))
        await fundings.add(_funding(f"p-{reference}", clock, created_at=t0 + at))
        await fundings.mark_published(f"p-{reference}", t0)
    later = t0 + timedelta(seconds=1)
    for prefix, find in (("u-", fundings.unpublished), ("p-", fundings.awaiting_wallet)):
        # By when each was stored, then by reference (two stored within one millisecond).
        assert _references(await find(later)) == [prefix + x for x in "dacbe"]
        first = await find(later, limit=2)
        assert _references(first) == [prefix + "d", prefix + "a"]
        second = await find(later, limit=2, after=(first[-1].created_at, first[-1].reference_id))
        assert _references(second) == [prefix + "c", prefix + "b"]
        rest = await find(later, after=(second[-1].created_at, second[-1].reference_id))
        assert _references(rest) == [prefix + "e"]
        assert len(await find(later, limit=0)) == 5


# The use case and its HTTP answer


async def _ready() -> bool:
    return True


@pytest.fixture
def liquidity(store_database: Database | None, clock: FakeClock) -> Liquidity:
    return Liquidity(_fundings(store_database), RecordingSender(), clock)


def _sent(liquidity: Liquidity) -> list[WalletCommand]:
    assert isinstance(liquidity.wallet, RecordingSender)
    return liquidity.wallet.sent


async def test_a_funding_whose_send_failed_is_accepted_and_sent_by_the_relay(
    liquidity: Liquidity, clock: FakeClock, jwt_secret: str, auth_headers: Any
) -> None:
    app = create_app(title="trading-test", auth_secret=jwt_secret, ready=_ready)
    install_trading_errors(app)
    app.include_router(liquidity_routes(liquidity))
    admin = auth_headers("ops", "admin")
    body = {"currency": "ETH", "amount": "100", "reference_id": "treasury-7"}
    assert isinstance(liquidity.wallet, RecordingSender)
    liquidity.wallet.fail_next = True  # the broker is away for this one send
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as http:
        accepted = await http.post("/api/admin/liquidity", json=body, headers=admin)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "pending"
        assert _sent(liquidity) == []
        stored = await http.get("/api/admin/liquidity/treasury-7", headers=admin)
        assert stored.json()["status"] == "pending"

        assert await liquidity.resend_unpublished(GRACE) == 0  # the request may still send it
        clock.advance(6)
        assert await liquidity.resend_unpublished(GRACE) == 1
        [command] = _sent(liquidity)
        assert (command.reference_id, command.transaction_type) == (
            "treasury-7",
            "liquidity_funding",
        )
        assert await liquidity.resend_unpublished(GRACE) == 0  # published now
        await liquidity.apply_result(result_of(command, "applied"))
        done = await http.get("/api/admin/liquidity/treasury-7", headers=admin)
        assert done.json()["status"] == "completed"


async def test_a_funding_whose_result_was_lost_is_asked_about_again(
    liquidity: Liquidity, clock: FakeClock
) -> None:
    """The wallet applied the credit, its result never came back: after the conversions'
    ask-again delay the same command goes out again, and the wallet's duplicate (carrying the
    first outcome) completes the funding, once."""
    await liquidity.fund("ops", "ETH", "100", "treasury-8")
    [first] = _sent(liquidity)
    clock.advance(ASK_AGAIN.total_seconds() - 1)
    assert await liquidity.ask_again(ASK_AGAIN) == 0  # the answer may still be on its way
    clock.advance(2)
    assert await liquidity.ask_again(ASK_AGAIN) == 1
    assert await liquidity.ask_again(ASK_AGAIN) == 0  # once per period
    again = _sent(liquidity)[-1]
    assert (again.idempotency_key, again.fingerprint()) == (
        first.idempotency_key,
        first.fingerprint(),
    )
    await liquidity.apply_result(result_of(again, "duplicate", original_status="applied"))
    await liquidity.apply_result(result_of(again, "rejected", reason="late"))  # settled once
    assert (await liquidity.get("treasury-8")).status is Status.COMPLETED
    clock.advance(60)
    assert await liquidity.ask_again(ASK_AGAIN) == 0  # settled: nothing awaited


# Through the service's own background relay


class SilentWallet(WalletClient):
    """Records each command sent; no result ever comes back."""

    def __init__(self) -> None:
        super().__init__("unused:9092")
        self.sent: list[WalletCommand] = []

    async def send(
        self, command: WalletCommand, *, wait: bool = True, result_timeout: float | None = None
    ) -> CommandResult | None:
        self.sent.append(command)
        return None


@pytest.mark.integration
async def test_the_service_relays_fundings(
    mongo_database: Database, clock: FakeClock, jwt_secret: str
) -> None:
    fundings = MongoFundings(mongo_database)
    await fundings.add(_funding("relay-never-sent", clock, created_at=clock() - timedelta(hours=1)))
    wallet = SilentWallet()
    settings = TradingSettings(
        auth_jwt_secret=jwt_secret, TRADING_OUTBOX_RELAY_INTERVAL_SECONDS=0.05
    )
    context = TradingContext(
        settings=settings,
        database=mongo_database,
        wallet=wallet,
        publisher=EventPublisher("unused:9092"),
        prices=PriceBook(max_age=timedelta(seconds=60)),
        clock=clock,
    )
    feature = build_conversions_feature(context)

    def sent() -> list[str]:
        return [c.reference_id for c in wallet.sent if c.reference_id.startswith("relay-")]

    await feature.start()
    try:
        assert sent() == ["relay-never-sent"]  # at the start, as an unpublished conversion is
        clock.advance(ASK_AGAIN.total_seconds() + 1)
        for _ in range(100):
            if len(sent()) == 2:
                break
            await asyncio.sleep(0.02)
        assert sent() == ["relay-never-sent"] * 2  # asked again by the background relay
        assert await feature.ready()
    finally:
        await feature.stop()
