"""The own order list over HTTP a page at a time, over the in-memory store and over MongoDB: a
market maker with more open orders than a page reaches every one of them by following
`next_cursor`, each once, while more orders arrive; a cursor this API did not return is 400
`invalid_cursor`, a `limit` out of range 422 `validation_error`."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import create_app
from trading.bootstrap import install_trading_errors
from trading.messaging import EventPublisher
from trading.spot.adapters.memory import MemorySpotStore
from trading.spot.adapters.mongo import MongoSpotStore
from trading.spot.api import spot_routes
from trading.spot.domain.book import OrderType, Side
from trading.spot.domain.markets import Fees, Market
from trading.spot.orders import SpotBatch, SpotOrder
from trading.spot.ports import SpotStore
from trading.spot.service import SpotOrders
from trading.spot.wallet import SpotWallet
from trading.testing import FakeClock

ORDERS = "/api/trading/orders"
type Auth = Callable[..., dict[str, str]]


class _Published(EventPublisher):
    def __init__(self) -> None:
        pass

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        pass


class _Locks(SpotWallet):
    def __init__(self) -> None:
        pass

    async def lock(self, order: SpotOrder) -> None:
        pass

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        raise AssertionError("not the API's job")


@dataclass
class Spot:
    http: httpx.AsyncClient
    orders: SpotOrders
    store: SpotStore
    clock: FakeClock
    auth: Auth

    async def bid(self, user: str, price: str) -> str:
        """A limit buy of 0.0001 BTC at `price` (pending: in the open list), its order id."""
        placed = await self.orders.place(
            user,
            pair="BTC-GBP",
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount="0.0001",
            price=price,
            quote_amount=None,
        )
        return placed.order_id

    async def listed(self, user: str, **params: Any) -> httpx.Response:
        return await self.http.get(ORDERS, params=params, headers=self.auth(user))


async def spot_store(store_database: AsyncDatabase[dict[str, Any]] | None) -> SpotStore:
    """The store of a store suite's run: in memory, or over its MongoDB database."""
    if store_database is None:
        return MemorySpotStore()
    store = MongoSpotStore(store_database)
    await store.ensure_indexes()
    return store


@asynccontextmanager
async def spot_api(orders: SpotOrders, jwt_secret: str) -> AsyncIterator[httpx.AsyncClient]:
    """The spot routes over `orders`, called in process."""

    async def ready() -> bool:
        return True

    app = create_app(title="trading", auth_secret=jwt_secret, ready=ready)
    install_trading_errors(app)
    app.include_router(spot_routes(orders))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as http:
        yield http


@pytest_asyncio.fixture
async def spot(
    store_database: AsyncDatabase[dict[str, Any]] | None, jwt_secret: str, auth_headers: Auth
) -> AsyncIterator[Spot]:
    store = await spot_store(store_database)
    clock = FakeClock()
    orders = SpotOrders(
        store, _Locks(), _Published(), "t.trading.orders", Fees.of("0.001", "0.002"), clock
    )
    async with spot_api(orders, jwt_secret) as http:
        yield Spot(http, orders, store, clock, auth_headers)


async def test_every_open_order_of_a_market_maker_is_reached_once_by_following_next_cursor(
    spot: Spot,
) -> None:
    """520 open orders, several to a millisecond. Before, the list stopped at the newest 500
    with no way to the other 20, which the market maker could then not find to cancel."""
    placed: list[str] = []
    created: dict[str, datetime] = {}

    def newest_first(order_ids: list[str]) -> list[str]:
        return sorted(order_ids, key=lambda i: (created[i], i), reverse=True)

    for n in range(520):
        if n % 3 == 0:
            spot.clock.advance(0.001)
        placed.append(await spot.bid("mm", f"{10_000 + n}.00"))
        created[placed[-1]] = spot.clock()
    failed = placed[::50]  # their locks refused: closed, not open
    for order_id in failed:
        assert await spot.store.fail_pending(order_id, "mm", "insufficient_funds", spot.clock())
    open_ids = newest_first([i for i in placed if i not in failed])
    await spot.bid("bob", "9000.00")  # another user's: never listed

    # Without limit or cursor the list answers what it answered before it paged: the newest 500.
    first = await spot.listed("mm", status="open")
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["items"]) == 500
    assert body["next_cursor"] is not None
    seen = [o["order_id"] for o in body["items"]]
    assert seen == open_ids[:500]  # newest first, then by id
    # Orders placed while paging come before the cursor: on no later page.
    spot.clock.advance(1)
    arrived = [await spot.bid("mm", "9999.00") for _ in range(3)]
    created.update(dict.fromkeys(arrived, spot.clock()))
    cursor = body["next_cursor"]
    while cursor is not None:
        page = await spot.listed("mm", status="open", cursor=cursor)
        assert page.status_code == 200, page.text
        seen += [o["order_id"] for o in page.json()["items"]]
        cursor = page.json()["next_cursor"]
    assert len(seen) == len(set(seen)) == len(open_ids)
    assert set(seen) == set(open_ids)

    # Smaller pages reach the same orders, the new ones first, and each once.
    small: list[str] = []
    params: dict[str, Any] = {"status": "open", "limit": 37}
    pages = 0
    while True:
        page = (await spot.listed("mm", **params)).json()
        assert len(page["items"]) <= 37
        small += [o["order_id"] for o in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert small == newest_first(arrived) + open_ids
    assert pages == 14  # 513 orders: 13 full pages and one of 32

    # The closed list pages the same way, with no order of the open one.
    closed = (await spot.listed("mm", status="closed", limit=5)).json()
    assert [o["order_id"] for o in closed["items"]] == newest_first(failed)[:5]
    rest = (await spot.listed("mm", status="closed", cursor=closed["next_cursor"])).json()
    assert [o["order_id"] for o in rest["items"]] == newest_first(failed)[5:]
    assert rest["next_cursor"] is None
    # Without a status: both, newest first.
    every = (await spot.listed("mm", limit=500)).json()
    assert [o["order_id"] for o in every["items"]] == newest_first(placed + arrived)[:500]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_a_cursor_the_list_did_not_return_and_a_limit_out_of_range_are_refused(
    spot: Spot,
) -> None:
    for n in range(3):
        spot.clock.advance(0.001)
        await spot.bid("amy", f"{10_000 + n}.00")
    page = (await spot.listed("amy", limit=2)).json()
    assert len(page["items"]) == 2
    assert page["next_cursor"] is not None
    following = (await spot.listed("amy", limit=2, cursor=page["next_cursor"])).json()
    assert (len(following["items"]), following["next_cursor"]) == (1, None)

    bad_cursors = [
        "nope",
        "%%%",
        "é",
        page["next_cursor"] + "!",
        _cursor("t|2026-11-30T12:00:00+00:00|x"),  # another list's tag
        _cursor("s|2026-11-30T12:00:00+00:00|"),  # no order id
        _cursor("s|2026-11-30T12:00:00|x"),  # no offset
        _cursor("s|1796040000000|x"),
        _cursor("s| 2026-11-30T12:00:00+00:00|x"),
        _cursor("s|9999-12-31T23:59:59-01:00|x"),  # an instant past year 9999
        _cursor("s|0001-01-01T00:00:00+01:00|x"),  # before year 1
        base64.b64encode(b"s|2026-11-30T12:00:00+00:00|\xff").decode(),
        _cursor("s|2026-11-30T12:00:00+00:00|x") + "=",  # padded: not as this API writes one
    ]
    for cursor in bad_cursors:
        response = await spot.listed("amy", cursor=cursor)
        assert response.status_code == 400, (cursor, response.text)
        assert response.json()["error"]["code"] == "invalid_cursor"
    # A cursor naming a place no order of the user has still reads from there on.
    elsewhere = (
        await spot.listed("amy", cursor=_cursor("s|2026-11-30T12:00:00.002000+00:00|-"))
    ).json()
    assert len(elsewhere["items"]) == 1

    for params in ({"limit": 0}, {"limit": 501}, {"limit": "ten"}, {"cursor": "x" * 201}):
        response = await spot.listed("amy", **params)
        assert (response.status_code, response.json()["error"]["code"]) == (
            422,
            "validation_error",
        ), params
    # Empty is absent: the first page, of the default size.
    assert len((await spot.listed("amy", limit="", cursor="")).json()["items"]) == 3
