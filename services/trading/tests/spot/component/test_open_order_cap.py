"""The cap on a user's open orders, over HTTP, over the in-memory store and over MongoDB: a limit
order past it is refused 409 `too_many_open_orders` with nothing stored or locked; a market order
(it never rests) and the retry of an order placed before are not refused; an order that closes
frees its place. Before, a user could keep any number of orders in the book (each held in the
matcher's memory and in every snapshot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from trading.spot.domain.markets import Fees
from trading.spot.orders import SpotOrder
from trading.spot.ports import SpotStore
from trading.spot.service import SpotOrders
from trading.testing import FakeClock

from .test_spot_order_list import Auth, _Locks, _Published, spot_api, spot_store

EXECUTE = "/api/trading/execute"
CAP = 3


class _CountedLocks(_Locks):
    def __init__(self) -> None:
        self.locked: list[str] = []

    async def lock(self, order: SpotOrder) -> None:
        self.locked.append(order.order_id)


@dataclass
class Capped:
    http: httpx.AsyncClient
    store: SpotStore
    locks: _CountedLocks
    clock: FakeClock
    auth: Auth

    async def place(self, user: str, price: str, **fields: Any) -> httpx.Response:
        body = {"pair": "BTC-GBP", "side": "buy", "type": "limit", "amount": "0.0001"}
        body |= {"price": price, **fields}
        return await self.http.post(EXECUTE, json=body, headers=self.auth(user))


@pytest_asyncio.fixture
async def capped(
    store_database: AsyncDatabase[dict[str, Any]] | None, jwt_secret: str, auth_headers: Auth
) -> AsyncIterator[Capped]:
    store = await spot_store(store_database)
    clock, locks = FakeClock(), _CountedLocks()
    fees = Fees.of("0.001", "0.002")
    orders = SpotOrders(
        store, locks, _Published(), "t.trading.orders", fees, clock, max_open_per_user=CAP
    )
    async with spot_api(orders, jwt_secret) as http:
        yield Capped(http, store, locks, clock, auth_headers)


async def test_a_limit_order_past_the_cap_is_refused_and_moves_nothing(capped: Capped) -> None:
    placed = []
    for n in range(CAP):
        answer = await capped.place("mm", f"{10_000 + n}.00", client_order_id=f"mm-{n}")
        assert answer.status_code == 202, answer.text
        placed.append(answer.json()["order_id"])

    refused = await capped.place("mm", "9000.00")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "too_many_open_orders"
    assert str(CAP) in error["message"]
    assert await capped.store.open_count("mm") == CAP
    assert capped.locks.locked == placed  # nothing locked for the refused one

    # The retry of an order placed before the cap was reached is answered with that order.
    again = await capped.place("mm", "10000.00", client_order_id="mm-0")
    assert (again.status_code, again.json()["order_id"]) == (202, placed[0])
    # Another order under a used client_order_id is still that conflict, not the cap's.
    reused = await capped.place("mm", "10001.00", client_order_id="mm-0")
    assert reused.json()["error"]["code"] == "idempotency_conflict"

    # Another user is not capped by this one's orders.
    assert (await capped.place("bob", "9000.00")).status_code == 202

    # A market order never rests: not refused at the cap.
    market = {"pair": "BTC-GBP", "side": "sell", "type": "market", "amount": "0.0001"}
    sold = await capped.http.post(EXECUTE, json=market, headers=capped.auth("mm"))
    assert sold.status_code == 202, sold.text

    # Once orders close, their places are free again.
    for order_id in (placed[0], sold.json()["order_id"]):
        assert await capped.store.fail_pending(order_id, "mm", "insufficient_funds", capped.clock())
    assert await capped.store.open_count("mm") == CAP - 1
    assert (await capped.place("mm", "9000.00")).status_code == 202
    assert (await capped.place("mm", "9001.00")).json()["error"]["code"] == "too_many_open_orders"
