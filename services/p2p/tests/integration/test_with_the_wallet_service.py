"""The P2P service against the REAL wallet over the embedded Kafka and MongoDB: the seed's trade end
to end (fee in platform:fees), cancel, an unfunded seller, expiry by the sweeper, disputes resolved
both ways, and a release racing a cancel. Balances are read from the wallet's HTTP API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from p2p.bootstrap import P2p, build_p2p, create_p2p_app
from p2p.settings import P2pSettings
from shared.infra.net import free_port
from shared.messaging.topics import Topics

D = Decimal
P = "/api/p2p/enhanced"


def fresh(name: str) -> str:
    """A user id no other test of the session uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


class ShiftableClock:
    """Real time plus an offset the test moves forward (to pass a payment deadline)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class System:
    url: str
    http: httpx.AsyncClient
    wallet: Any  # the wallet_service fixture's Wallet
    clock: ShiftableClock
    service: P2p

    async def offer(self, seller: str, **changes: Any) -> str:
        return str((await self.offer_made(seller, **changes))["offer_id"])

    async def offer_made(self, seller: str, **changes: Any) -> dict[str, Any]:
        body = {
            "currency": "BTC",
            "fiat_currency": "GBP",
            "price": "52000.00",
            "min_amount": "0.001",
            "max_amount": "0.5",
            "payment_methods": ["bank_transfer"],
            "payment_window_minutes": 15,
            **changes,
        }
        response = await self.http.post(
            f"{self.url}{P}/offers", json=body, headers=self.wallet.auth(seller)
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def trade(self, seller: str, buyer: str, amount: str = "0.01") -> dict[str, Any]:
        offer_id = await self.offer(seller)
        response = await self.http.post(
            f"{self.url}{P}/create-trade",
            json={"offer_id": offer_id, "amount": amount},
            headers=self.wallet.auth(buyer),
        )
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def post(self, route: str, user: str, *roles: str, **body: Any) -> httpx.Response:
        return await self.http.post(
            f"{self.url}{P}/{route}", json=body, headers=self.wallet.auth(user, *roles)
        )

    async def get(self, trade_id: str, user: str) -> dict[str, Any]:
        response = await self.http.get(
            f"{self.url}{P}/trades/{trade_id}", headers=self.wallet.auth(user)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def becomes(self, trade_id: str, user: str, status: str, within: float = 30) -> None:
        async def reached() -> bool:
            return (await self.get(trade_id, user))["status"] == status

        await self.wallet.eventually(reached, within=within)

    async def paid_trade(self, seller: str, buyer: str) -> str:
        trade_id = str((await self.trade(seller, buyer))["trade_id"])
        await self.becomes(trade_id, buyer, "escrowed")
        paid = await self.post("mark-paid", buyer, trade_id=trade_id)
        assert (paid.status_code, paid.json()["status"]) == (200, "paid"), paid.text
        return trade_id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    wallet_service: Any,
) -> AsyncIterator[System]:
    port = free_port()
    clock = ShiftableClock()
    p2p = build_p2p(
        P2pSettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_topic_prefix=kafka_topics.prefix,
            mongodb_url=mongodb_url,
            auth_jwt_secret=wallet_service.jwt_secret,
            p2p_mongodb_database=mongo_database.name,
            p2p_http_port=port,
            p2p_action_wait_seconds=20,
            p2p_sweep_interval_seconds=0.5,
            p2p_results_consumer_group=f"p2p-test-{port}",
            p2p_results_session_timeout_ms=3000,
            p2p_results_heartbeat_interval_ms=500,
        ),
        clock=clock,
    )
    assert not await p2p.ready()  # nothing started yet: /healthz must say 503
    async with (
        wallet_service.serving(create_p2p_app(p2p), port) as url,
        httpx.AsyncClient(timeout=60.0) as http,
    ):

        async def healthy() -> bool:
            return (await http.get(f"{url}/healthz")).status_code == 200

        await wallet_service.eventually(healthy, within=60)
        yield System(url, http, wallet_service, clock, p2p)


async def test_the_seeds_trade_end_to_end(system: System) -> None:
    seller, buyer = fresh("amy"), fresh("ben")
    await system.wallet.fund(seller, "0.1")
    fees_before = await system.wallet.fees()
    trade = await system.trade(seller, buyer, "0.01")
    assert (trade["status"], trade["fee"], trade["fiat_amount"]) == (
        "pending_escrow",
        "0.00001",
        "520.00",
    )
    trade_id = trade["trade_id"]
    await system.becomes(trade_id, buyer, "escrowed")
    assert await system.wallet.balance(seller) == (D("0.08999"), D("0.01001"))

    paid = await system.post("mark-paid", buyer, trade_id=trade_id)
    assert (paid.status_code, paid.json()["status"]) == (200, "paid")
    released = await system.post("release-crypto", seller, trade_id=trade_id)
    assert released.status_code in (200, 202), released.text
    await system.becomes(trade_id, buyer, "completed")
    # "completed" is set only after the wallet committed: every wallet endpoint shows it now.
    assert await system.wallet.balance(buyer) == (D("0.01"), D(0))
    assert await system.wallet.balance(seller) == (D("0.08999"), D(0))
    assert await system.wallet.fees() - fees_before == D("0.00001")
    again = await system.post("release-crypto", seller, trade_id=trade_id)
    assert (again.status_code, again.json()["status"]) == (200, "completed")
    assert await system.wallet.balance(buyer) == (D("0.01"), D(0))  # nothing moved twice


async def test_a_create_answers_the_instants_a_later_read_shows(system: System) -> None:
    """MongoDB keeps milliseconds: what a create answers (its timestamps, the payment deadline)
    is what a later GET shows, so the deadline enforced is the one the buyer was told."""
    seller, buyer = fresh("lou"), fresh("mia")
    await system.wallet.fund(seller, "0.1")
    made = await system.offer_made(seller)
    read = await system.http.get(
        f"{system.url}{P}/offers/{made['offer_id']}", headers=system.wallet.auth(buyer)
    )
    assert (read.status_code, read.json()) == (200, made)
    trade = await system.trade(seller, buyer)
    await system.becomes(trade["trade_id"], buyer, "escrowed")
    stored = await system.get(trade["trade_id"], buyer)
    for name in ("created_at", "payment_deadline"):
        assert stored[name] == trade[name], name
        assert datetime.fromisoformat(trade[name]).microsecond % 1000 == 0, name


async def test_cancel_and_an_unfunded_seller(system: System) -> None:
    seller, buyer, poor = fresh("cat"), fresh("dan"), fresh("pia")
    await system.wallet.fund(seller, "0.05")
    trade_id = str((await system.trade(seller, buyer, "0.02"))["trade_id"])
    await system.becomes(trade_id, buyer, "escrowed")
    refused = await system.post("cancel-trade", seller, trade_id=trade_id, reason="changed mind")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "seller_cannot_cancel")
    cancelled = await system.post("cancel-trade", buyer, trade_id=trade_id, reason="too slow")
    assert cancelled.status_code in (200, 202), cancelled.text
    await system.becomes(trade_id, buyer, "cancelled")
    assert await system.wallet.balance(seller) == (D("0.05"), D(0))

    await system.wallet.fund(poor, "0.01")  # less than 0.01 + its fee
    failed = str((await system.trade(poor, buyer, "0.01"))["trade_id"])
    await system.becomes(failed, buyer, "failed")
    assert (await system.get(failed, poor))["reason"] == "insufficient_funds"
    assert await system.wallet.balance(poor) == (D("0.01"), D(0))


async def test_expiry_by_the_sweeper(system: System) -> None:
    seller, buyer, payer = fresh("eli"), fresh("fay"), fresh("gus")
    await system.wallet.fund(seller, "0.1")
    unpaid = str((await system.trade(seller, buyer, "0.01"))["trade_id"])
    paid = await system.paid_trade(seller, payer)
    await system.becomes(unpaid, buyer, "escrowed")
    deadline = datetime.fromisoformat((await system.get(unpaid, buyer))["payment_deadline"])
    system.clock.offset += deadline - system.clock() + timedelta(seconds=1)
    started = asyncio.get_running_loop().time()
    await system.becomes(unpaid, buyer, "cancelled", within=10)
    took = asyncio.get_running_loop().time() - started
    assert took < 10, took
    expired = await system.get(unpaid, buyer)
    assert (expired["cancelled_by"], expired["reason"]) == ("system", "payment_deadline_passed")
    late = await system.post("mark-paid", buyer, trade_id=unpaid)
    assert (late.status_code, late.json()["error"]["code"]) == (409, "trade_cancelled")
    # A trade marked paid is never cancelled by a timer.
    await asyncio.sleep(2)
    assert (await system.get(paid, payer))["status"] == "paid"
    assert await system.wallet.balance(seller) == (D("0.08999"), D("0.01001"))


async def test_disputes_resolved_both_ways(system: System) -> None:
    seller, buyer = fresh("hal"), fresh("ivy")
    await system.wallet.fund(seller, "0.1")
    fees_before = await system.wallet.fees()
    to_buyer = await system.paid_trade(seller, buyer)
    to_seller = await system.paid_trade(seller, buyer)
    for trade_id, who in ((to_buyer, buyer), (to_seller, seller)):
        disputed = await system.post("dispute", who, trade_id=trade_id, reason="no payment seen")
        assert (disputed.status_code, disputed.json()["status"]) == (200, "disputed")
    release = await system.post("release-crypto", seller, trade_id=to_buyer)
    assert (release.status_code, release.json()["error"]["code"]) == (409, "not_paid")
    cancel = await system.post("cancel-trade", buyer, trade_id=to_seller)
    assert (cancel.status_code, cancel.json()["error"]["code"]) == (409, "trade_disputed")
    assert await system.wallet.balance(seller) == (D("0.07998"), D("0.02002"))  # still locked
    party = await system.post(
        "resolve-dispute", seller, "admin", trade_id=to_buyer, outcome="seller"
    )
    assert (party.status_code, party.json()["error"]["code"]) == (403, "party_cannot_resolve")

    for trade_id, outcome in ((to_buyer, "buyer"), (to_seller, "seller")):
        resolved = await system.post(
            "resolve-dispute", "ops", "admin", trade_id=trade_id, outcome=outcome
        )
        assert resolved.status_code in (200, 202), resolved.text
    await system.becomes(to_buyer, buyer, "completed")
    await system.becomes(to_seller, buyer, "cancelled")
    assert await system.wallet.balance(buyer) == (D("0.01"), D(0))
    assert await system.wallet.balance(seller) == (D("0.08999"), D(0))
    assert await system.wallet.fees() - fees_before == D("0.00001")


async def test_a_release_racing_a_cancel_leaves_exactly_one_done(system: System) -> None:
    seller, buyer = fresh("jon"), fresh("kim")
    await system.wallet.fund(seller, "0.1")
    trade_id = await system.paid_trade(seller, buyer)
    answers = await asyncio.gather(
        system.post("release-crypto", seller, trade_id=trade_id),
        system.post("cancel-trade", buyer, trade_id=trade_id),
        system.post("release-crypto", seller, trade_id=trade_id),
        system.post("cancel-trade", buyer, trade_id=trade_id),
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(409) == 2, [a.text for a in answers]  # the other action's two clicks
    final = answers[0].json().get("status") or answers[1].json().get("status")
    target = "completed" if final in ("releasing", "completed") else "cancelled"
    await system.becomes(trade_id, buyer, target)
    if target == "completed":
        assert await system.wallet.balance(buyer) == (D("0.01"), D(0))
        assert await system.wallet.balance(seller) == (D("0.08999"), D(0))
    else:
        assert await system.wallet.balance(buyer) == (D(0), D(0))
        assert await system.wallet.balance(seller) == (D("0.1"), D(0))


async def test_a_double_clicked_create_trade_escrows_once(system: System) -> None:
    seller, buyer = fresh("ivy"), fresh("jon")
    await system.wallet.fund(seller, "0.1")
    offer_id = await system.offer(seller)
    headers = {**system.wallet.auth(buyer), "Idempotency-Key": f"buy-{offer_id}"}
    body = {"offer_id": offer_id, "amount": "0.01"}
    answers = await asyncio.gather(
        *(
            system.http.post(f"{system.url}{P}/create-trade", json=body, headers=headers)
            for _ in "ab"
        )
    )
    assert sorted(a.status_code for a in answers) in ([202, 202], [202, 409])
    [created] = [a.json() for a in answers if a.status_code == 202][:1]
    retried = await system.http.post(f"{system.url}{P}/create-trade", json=body, headers=headers)
    assert (retried.status_code, retried.json()) == (202, created)
    await system.becomes(created["trade_id"], buyer, "escrowed")
    listed = await system.http.get(f"{system.url}{P}/trades", headers=system.wallet.auth(buyer))
    assert [t["trade_id"] for t in listed.json()["items"]] == [created["trade_id"]]
    assert await system.wallet.balance(seller) == (D("0.08999"), D("0.01001"))


async def test_healthz_reports_a_stuck_results_consumer(system: System) -> None:
    results = system.service.results
    # One result has been failing (the database away) for longer than allowed.
    results._failing_since = time.monotonic() - results._stuck_after - 1
    try:
        stuck = await system.http.get(f"{system.url}/healthz")
        assert stuck.status_code == 503
    finally:
        results._failing_since = None
    healthy = await system.http.get(f"{system.url}/healthz")
    assert healthy.status_code == 200
