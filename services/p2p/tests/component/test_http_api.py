"""The HTTP API over the memory stores and wallet: routes, status codes, error bodies, OpenAPI."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio

from p2p.entrypoints.http import Handlers, include_routes
from shared.http import create_app, make_token

SECRET = "component-jwt-secret-of-at-least-32-bytes"
P = "/api/p2p/enhanced"
OFFER = {
    "currency": "BTC",
    "fiat_currency": "GBP",
    "price": "52000.00",
    "min_amount": "0.001",
    "max_amount": "0.5",
    "payment_methods": ["bank_transfer"],
    "payment_window_minutes": 15,
}


def auth(user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(SECRET, user, roles)}"}


async def _ready() -> bool:
    return True


@pytest_asyncio.fixture
async def api(memory_p2p: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(title="p2p", auth_secret=SECRET, ready=_ready)
    include_routes(app, Handlers(offers=memory_p2p.offers, trades=memory_p2p.trades))
    memory_p2p.wallet.deposit("sam", "BTC", "1", "fund-sam")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p2p") as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


async def offer(api: httpx.AsyncClient, **changes: Any) -> str:
    response = await api.post(f"{P}/offers", json={**OFFER, **changes}, headers=auth("sam"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "active"
    return str(body["offer_id"])


async def escrowed_trade(api: httpx.AsyncClient, memory_p2p: Any, amount: str = "0.01") -> str:
    offer_id = await offer(api)
    created = await api.post(
        f"{P}/create-trade", json={"offer_id": offer_id, "amount": amount}, headers=auth("bea")
    )
    assert created.status_code == 202, created.text
    await memory_p2p.deliver_all()
    return str(created.json()["trade_id"])


async def test_the_seed_trade(api: httpx.AsyncClient, memory_p2p: Any) -> None:
    offer_id = await offer(api)
    listed = await api.get(f"{P}/offers", params={"currency": "BTC"}, headers=auth("bea"))
    assert [o["offer_id"] for o in listed.json()["items"]] == [offer_id]
    created = await api.post(
        f"{P}/create-trade", json={"offer_id": offer_id, "amount": "0.01"}, headers=auth("bea")
    )
    assert created.status_code == 202
    trade = created.json()
    assert {k: trade[k] for k in ("status", "amount", "fee", "fiat_amount")} == {
        "status": "pending_escrow",
        "amount": "0.01",
        "fee": "0.00001",
        "fiat_amount": "520.00",
    }
    assert (trade["seller_id"], trade["buyer_id"], trade["price"]) == ("sam", "bea", "52000.00")
    assert trade["payment_deadline"]
    await memory_p2p.deliver_all()
    trade_id = trade["trade_id"]
    got = await api.get(f"{P}/trades/{trade_id}", headers=auth("sam"))
    assert got.json()["status"] == "escrowed"

    paid = await api.post(f"{P}/mark-paid", json={"trade_id": trade_id}, headers=auth("bea"))
    assert (paid.status_code, paid.json()["status"]) == (200, "paid")
    again = await api.post(f"{P}/mark-paid", json={"trade_id": trade_id}, headers=auth("bea"))
    assert (again.status_code, again.json()["status"]) == (200, "paid")  # a double click
    released = await api.post(
        f"{P}/release-crypto", json={"trade_id": trade_id}, headers=auth("sam")
    )
    assert (released.status_code, released.json()["status"]) == (200, "completed")
    wallet = memory_p2p.wallet
    assert str(wallet.available("bea", "BTC").normalize()) == "0.01"
    assert str(wallet.fees("BTC").normalize()) == "0.00001"
    assert str(wallet.available("sam", "BTC").normalize()) == "0.98999"
    cancel = await api.post(
        f"{P}/cancel-trade", json={"trade_id": trade_id, "reason": "x"}, headers=auth("bea")
    )
    assert (cancel.status_code, cancel.json()["error"]["code"]) == (409, "trade_completed")
    mine = await api.get(f"{P}/trades", headers=auth("bea"))
    assert [t["trade_id"] for t in mine.json()["items"]] == [trade_id]
    nothing: dict[str, Any] = {"items": [], "next_cursor": None}
    assert (await api.get(f"{P}/trades", headers=auth("eve"))).json() == nothing


async def test_refusals(api: httpx.AsyncClient, memory_p2p: Any) -> None:
    trade_id = await escrowed_trade(api, memory_p2p)
    cases = [
        (f"{P}/release-crypto", {"trade_id": trade_id}, auth("sam"), 409, "not_paid"),
        (f"{P}/release-crypto", {"trade_id": trade_id}, auth("bea"), 403, "not_the_seller"),
        (f"{P}/release-crypto", {"trade_id": trade_id}, auth("eve"), 404, "trade_not_found"),
        (f"{P}/cancel-trade", {"trade_id": trade_id}, auth("sam"), 403, "seller_cannot_cancel"),
        (f"{P}/mark-paid", {"trade_id": trade_id}, auth("ops", "admin"), 403, "not_a_party"),
        (f"{P}/dispute", {"trade_id": trade_id}, auth("bea"), 409, "not_paid"),
        (
            f"{P}/resolve-dispute",
            {"trade_id": trade_id, "outcome": "buyer"},
            auth("bea"),
            403,
            "admin_required",
        ),
        (
            f"{P}/resolve-dispute",
            {"trade_id": trade_id, "outcome": "buyer"},
            auth("sam", "admin"),
            403,
            "party_cannot_resolve",
        ),
        (
            f"{P}/resolve-dispute",
            {"trade_id": trade_id, "outcome": "nobody"},
            auth("ops", "admin"),
            400,
            "invalid_outcome",
        ),
        (f"{P}/mark-paid", {"trade_id": "p2p_nope"}, auth("bea"), 404, "trade_not_found"),
        (f"{P}/mark-paid", {"trade_id": trade_id, "status": "paid"}, auth("bea"), 422, None),
    ]
    for url, body, headers, status, code in cases:
        response = await api.post(url, json=body, headers=headers)
        assert response.status_code == status, (url, body, response.text)
        if code is not None:
            assert response.json()["error"]["code"] == code, (url, response.text)
    assert (await api.get(f"{P}/trades/{trade_id}", headers=auth("eve"))).status_code == 404
    admin_view = await api.get(f"{P}/trades/{trade_id}", headers=auth("ops", "admin"))
    assert admin_view.json()["status"] == "escrowed"
    assert (await api.post(f"{P}/mark-paid", json={"trade_id": trade_id})).status_code == 401


async def test_only_a_disputed_trade_is_resolved(api: httpx.AsyncClient, memory_p2p: Any) -> None:
    async def resolve(trade_id: str, outcome: str) -> httpx.Response:
        return await api.post(
            f"{P}/resolve-dispute",
            json={"trade_id": trade_id, "outcome": outcome},
            headers=auth("ops", "admin"),
        )

    async def post(route: str, trade_id: str, user: str) -> None:
        response = await api.post(f"{P}/{route}", json={"trade_id": trade_id}, headers=auth(user))
        assert response.status_code == 200, response.text

    released = await escrowed_trade(api, memory_p2p)
    await post("mark-paid", released, "bea")
    await post("release-crypto", released, "sam")
    cancelled = await escrowed_trade(api, memory_p2p)
    await post("cancel-trade", cancelled, "bea")
    await memory_p2p.deliver_all()
    # The seller released and the buyer cancelled: nobody disputed, there is nothing to resolve.
    for trade_id, outcome in ((released, "buyer"), (cancelled, "seller")):
        refused = await resolve(trade_id, outcome)
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "not_disputed")
        trade = (await api.get(f"{P}/trades/{trade_id}", headers=auth("ops", "admin"))).json()
        assert trade["resolution"] is None

    disputed = await escrowed_trade(api, memory_p2p)
    await post("mark-paid", disputed, "bea")
    await post("dispute", disputed, "bea")
    first = await resolve(disputed, "buyer")
    await memory_p2p.deliver_all()
    again = await resolve(disputed, "buyer")  # a double click: the same answer, nothing moves
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["status"] == "completed"
    other = await resolve(disputed, "seller")
    assert (other.status_code, other.json()["error"]["code"]) == (409, "not_disputed")
    assert str(memory_p2p.wallet.available("bea", "BTC").normalize()) == "0.02"


async def test_offer_rules(api: httpx.AsyncClient, memory_p2p: Any) -> None:
    offer_id = await offer(api)
    own = await api.post(
        f"{P}/create-trade", json={"offer_id": offer_id, "amount": "0.01"}, headers=auth("sam")
    )
    assert (own.status_code, own.json()["error"]["code"]) == (403, "own_offer")
    for amount, code in (("0.6", "amount_out_of_range"), ("0.000000001", "amount_too_precise")):
        response = await api.post(
            f"{P}/create-trade", json={"offer_id": offer_id, "amount": amount}, headers=auth("bea")
        )
        assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    bad = await api.post(
        f"{P}/offers", json={**OFFER, "payment_window_minutes": 61}, headers=auth("sam")
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_payment_window")
    # JSON numbers as clients write them: 1.5e1 minutes is 15 minutes.
    spelled = await api.post(
        f"{P}/offers",
        content=json.dumps({**OFFER, "payment_window_minutes": 0}).replace(
            '"payment_window_minutes": 0', '"payment_window_minutes": 1.5e1'
        ),
        headers={**auth("sam"), "Content-Type": "application/json"},
    )
    assert (spelled.status_code, spelled.json()["payment_window_minutes"]) == (201, 15)
    default_window = dict(OFFER)
    del default_window["payment_window_minutes"]
    made = await api.post(f"{P}/offers", json=default_window, headers=auth("sam"))
    assert made.json()["payment_window_minutes"] == 15
    not_yours = await api.delete(f"{P}/offers/{offer_id}", headers=auth("bea"))
    assert (not_yours.status_code, not_yours.json()["error"]["code"]) == (403, "not_the_seller")
    for _ in range(2):
        withdrawn = await api.delete(f"{P}/offers/{offer_id}", headers=auth("sam"))
        assert (withdrawn.status_code, withdrawn.json()["status"]) == (200, "withdrawn")
    late = await api.post(
        f"{P}/create-trade", json={"offer_id": offer_id, "amount": "0.01"}, headers=auth("bea")
    )
    assert (late.status_code, late.json()["error"]["code"]) == (409, "offer_not_active")
    listed = await api.get(f"{P}/offers", headers=auth("bea"))
    assert offer_id not in [o["offer_id"] for o in listed.json()["items"]]


async def test_cancel_before_the_lock_answers_waits_for_it(
    api: httpx.AsyncClient, memory_p2p: Any
) -> None:
    offer_id = await offer(api)
    created = await api.post(
        f"{P}/create-trade", json={"offer_id": offer_id, "amount": "0.01"}, headers=auth("bea")
    )
    trade_id = created.json()["trade_id"]
    cancel = await api.post(f"{P}/cancel-trade", json={"trade_id": trade_id}, headers=auth("bea"))
    assert (cancel.status_code, cancel.json()["status"]) == (202, "cancelling")
    assert [c.type for c in memory_p2p.publisher.queue] == ["lock"]  # no unlock before its lock
    await memory_p2p.deliver_all()
    done = await api.get(f"{P}/trades/{trade_id}", headers=auth("bea"))
    assert done.json()["status"] == "cancelled"
    assert str(memory_p2p.wallet.available("sam", "BTC").normalize()) == "1"
    assert memory_p2p.wallet.locked("sam", "BTC") == 0


def test_openapi_documents_every_error_answer(api: httpx.AsyncClient) -> None:
    schema = api.app.openapi()  # type: ignore[attr-defined]
    paths = schema["paths"]
    expected = {
        ("post", f"{P}/offers"): {"201", "400", "401", "422"},
        ("post", f"{P}/create-trade"): {"202", "400", "401", "403", "404", "409", "422"},
        ("post", f"{P}/release-crypto"): {"200", "202", "400", "401", "403", "404", "409", "422"},
        ("post", f"{P}/resolve-dispute"): {"200", "202", "400", "401", "403", "404", "409"},
        ("delete", f"{P}/offers/{{offer_id}}"): {"200", "401", "403", "404"},
        ("get", f"{P}/trades/{{trade_id}}"): {"200", "401", "404"},
    }
    for (method, path), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, set(responses))
        for status in statuses - {"200", "201", "202"}:
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody"), (path, status)


async def test_the_offer_list_refuses_a_parameter_it_does_not_take(api: httpx.AsyncClient) -> None:
    offer_id = await offer(api)
    for params in ({"seller_id": "sam"}, {"": "0"}, {"currency": "BTC", "status": "withdrawn"}):
        listed = await api.get(f"{P}/offers", params=params, headers=auth("bea"))
        assert (listed.status_code, listed.json()["error"]["code"]) == (422, "validation_error")
    listed = await api.get(
        f"{P}/offers", params={"currency": "BTC", "fiat_currency": "GBP"}, headers=auth("bea")
    )
    assert [o["offer_id"] for o in listed.json()["items"]] == [offer_id]


async def test_the_offer_list_refuses_a_currency_an_offer_could_not_have(
    api: httpx.AsyncClient,
) -> None:
    """A fiat as the coin, a coin as the fiat or an unknown code: 400 with the code a create
    answers for the same value, not an empty list that reads as "no offers"."""
    offer_id = await offer(api)
    cases = [
        ("currency", "GBP", "not_a_crypto_currency"),
        ("fiat_currency", "BTC", "not_a_fiat_currency"),
        ("currency", "XYZ", "unknown_currency"),
        ("fiat_currency", "XYZ", "unknown_currency"),
    ]
    for name, value, code in cases:
        listed = await api.get(f"{P}/offers", params={name: value}, headers=auth("bea"))
        assert listed.status_code == 400, (name, value, listed.text)
        assert listed.json()["error"]["code"] == code, (name, value)
        created = await api.post(f"{P}/offers", json={**OFFER, name: value}, headers=auth("sam"))
        assert (created.status_code, created.json()["error"]["code"]) == (400, code), (name, value)
    for params in (
        {"currency": "btc", "fiat_currency": "gbp"},
        {"currency": "", "fiat_currency": ""},
    ):
        listed = await api.get(f"{P}/offers", params=params, headers=auth("bea"))
        assert [o["offer_id"] for o in listed.json()["items"]] == [offer_id], params


def test_openapi_never_documents_fastapis_own_validation_body(api: httpx.AsyncClient) -> None:
    """A path parameter makes FastAPI document its own 422 body unless the route declares 422;
    the service answers every error, 422 included, with the contract's error body."""
    schema = api.app.openapi()  # type: ignore[attr-defined]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, status)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def keyed(user: str, key: str) -> dict[str, str]:
    return {**auth(user), "Idempotency-Key": key}


async def test_an_idempotency_key_creates_one_offer(api: httpx.AsyncClient) -> None:
    first = await api.post(f"{P}/offers", json=OFFER, headers=keyed("sam", "offer-1"))
    again = await api.post(f"{P}/offers", json=OFFER, headers=keyed("sam", "offer-1"))
    assert (first.status_code, again.status_code) == (201, 201), first.text
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    racing = await asyncio.gather(
        *(api.post(f"{P}/offers", json=OFFER, headers=keyed("sam", "offer-2")) for _ in range(2))
    )
    assert sorted(r.status_code for r in racing) in ([201, 201], [201, 409])
    reused = await api.post(
        f"{P}/offers", json={**OFFER, "price": "1.00"}, headers=keyed("sam", "offer-1")
    )
    assert (reused.status_code, reused.json()["error"]["code"]) == (422, "idempotency_key_reused")
    listed = await api.get(f"{P}/offers", headers=auth("sam"))
    assert len(listed.json()["items"]) == 2  # one per key
    # Without a key every request creates, as the contract says.
    await offer(api)
    assert len((await api.get(f"{P}/offers", headers=auth("sam"))).json()["items"]) == 3


async def test_an_idempotency_key_creates_one_trade(
    api: httpx.AsyncClient, memory_p2p: Any
) -> None:
    offer_id = await offer(api)
    body = {"offer_id": offer_id, "amount": "0.01"}
    first = await api.post(f"{P}/create-trade", json=body, headers=keyed("bea", "trade-1"))
    again = await api.post(f"{P}/create-trade", json=body, headers=keyed("bea", "trade-1"))
    assert (first.status_code, again.status_code) == (202, 202), first.text
    assert first.json() == again.json()
    racing = await asyncio.gather(
        *(api.post(f"{P}/create-trade", json=body, headers=keyed("bea", "trade-2")) for _ in "ab")
    )
    assert sorted(r.status_code for r in racing) in ([202, 202], [202, 409])
    reused = await api.post(
        f"{P}/create-trade", json={**body, "amount": "0.02"}, headers=keyed("bea", "trade-1")
    )
    assert (reused.status_code, reused.json()["error"]["code"]) == (422, "idempotency_key_reused")
    # A refusal releases the key: the same key works once the request is fixable.
    refused = await api.post(
        f"{P}/create-trade", json={**body, "offer_id": "nope"}, headers=keyed("bea", "trade-3")
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "offer_not_found")
    await memory_p2p.deliver_all()
    trades = (await api.get(f"{P}/trades", headers=auth("bea"))).json()["items"]
    assert len(trades) == 2  # one per key that succeeded
    assert memory_p2p.wallet.locked("sam", "BTC") == 2 * Decimal("0.01001")


def test_openapi_documents_the_idempotency_key(api: httpx.AsyncClient) -> None:
    paths = api.app.openapi()["paths"]  # type: ignore[attr-defined]
    for path in (f"{P}/offers", f"{P}/create-trade"):
        operation = paths[path]["post"]
        assert [p["name"] for p in operation["parameters"]] == ["Idempotency-Key"]
        assert "idempotency_key_in_use" in operation["responses"]["409"]["description"]


async def test_a_keyed_body_nested_too_deep_is_a_4xx(api: httpx.AsyncClient) -> None:
    """Its fingerprint raised RecursionError: a 500 with a key, a 422 without one."""
    for headers in ({}, {"Idempotency-Key": "deep-1"}):
        response = await api.post(
            f"{P}/offers",
            content=b"[" * 100_000,
            headers={**auth("sam"), **headers, "Content-Type": "text/plain"},
        )
        assert 400 <= response.status_code < 500, (headers, response.status_code)
        assert response.json()["error"]["code"]


async def test_text_utf8_cannot_encode_is_refused_and_nothing_moves(
    api: httpx.AsyncClient, memory_p2p: Any
) -> None:
    """A lone surrogate in a reason: before, the cancel was applied (the seller's coins
    unlocked), answered 500, and the stored reason made every read of the trade a 500."""
    trade_id = await escrowed_trade(api, memory_p2p)
    locked = memory_p2p.wallet.locked("sam", "BTC")
    headers = {**auth("bea"), "content-type": "application/json"}
    for route in ("cancel-trade", "dispute"):
        body = f'{{"trade_id": "{trade_id}", "reason": "x\\ud800y"}}'
        refused = await api.post(f"{P}/{route}", content=body, headers=headers)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_text")
        assert "body.reason" in refused.json()["error"]["message"]
    got = await api.get(f"{P}/trades/{trade_id}", headers=auth("bea"))
    assert (got.status_code, got.json()["status"]) == (200, "escrowed")
    assert memory_p2p.wallet.locked("sam", "BTC") == locked
    # A surrogate pair is one character (an emoji): text as any other.
    body = f'{{"trade_id": "{trade_id}", "reason": "changed my mind \\ud83d\\ude00"}}'
    cancelled = await api.post(f"{P}/cancel-trade", content=body, headers=headers)
    assert cancelled.status_code in (200, 202), cancelled.text


async def pages_of(
    api: httpx.AsyncClient, path: str, user: str, key: str, **params: Any
) -> list[list[dict[str, Any]]]:
    """Every page of a list, following `next_cursor` from the first page to the last."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while len(pages) < 100:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get(f"{P}{path}", params=query, headers=auth(user))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError(f"{path} never reached its last page")


def ids(pages: list[list[dict[str, Any]]], key: str) -> list[str]:
    return [item[key] for page in pages for item in page]


async def test_every_trade_of_a_user_is_reachable_a_page_after_another(
    api: httpx.AsyncClient, memory_p2p: Any
) -> None:
    """More than 200 trades: the list stopped at 200 and the rest could never be read."""
    handler, clock = memory_p2p.trades, memory_p2p.clock
    sams, beas = await memory_p2p.funded_offer("sam"), await memory_p2p.funded_offer("bea")
    made = set()
    for index in range(205):
        if index % 10 == 0:
            clock.advance(timedelta(milliseconds=1))  # the rest share an instant: ids decide
        # bea buys most and sells a few
        buyer, offer_id = ("sam", beas) if index % 50 == 0 else ("bea", sams)
        made.add((await handler.create(buyer, offer_id, "0.001")).trade_id)
    pages = await pages_of(api, "/trades", "bea", "trade_id")
    assert [len(page) for page in pages] == [200, 5]
    read = ids(pages, "trade_id")
    assert (len(read), set(read)) == (205, made)
    newest_first = [(t["created_at"], t["trade_id"]) for page in pages for t in page]
    assert newest_first == sorted(newest_first, reverse=True)
    small = await pages_of(api, "/trades", "bea", "trade_id", limit=60)
    assert [len(page) for page in small] == [60, 60, 60, 25]
    assert ids(small, "trade_id") == read
    # Trades made while paging: none that was there is read twice or left out.
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 70, **({"cursor": cursor} if cursor else {})}
        body = (await api.get(f"{P}/trades", params=params, headers=auth("bea"))).json()
        seen += [t["trade_id"] for t in body["items"]]
        made.add((await handler.create("bea", sams, "0.001")).trade_id)
        clock.advance(timedelta(milliseconds=1))
        if (cursor := body["next_cursor"]) is None:
            break
    assert len(seen) == len(set(seen)) == 205
    assert set(seen) == set(read)
    nobody = await api.get(f"{P}/trades", headers=auth("eve"))
    assert nobody.json() == {"items": [], "next_cursor": None}


async def test_every_active_offer_is_reachable_a_page_after_another(
    api: httpx.AsyncClient, memory_p2p: Any
) -> None:
    """More than 200 active offers in a market: the list stopped at the 200 cheapest."""
    clock, made = memory_p2p.clock, set()
    for index in range(205):
        if index % 10 == 0:
            clock.advance(timedelta(milliseconds=1))
        changes = {"price": str(52000 - index % 7), "currency": "BTC"}
        response = await api.post(
            f"{P}/offers", json={**OFFER, **changes}, headers=auth(f"seller{index % 3}")
        )
        made.add(response.json()["offer_id"])
    for currency in ("ETH", "BTC"):  # another market, and offers taken down
        other = await offer(api, currency=currency, price="1.00")
        if currency == "BTC":
            await api.delete(f"{P}/offers/{other}", headers=auth("sam"))
    pages = await pages_of(api, "/offers", "bea", "offer_id", currency="BTC", fiat_currency="")
    assert [len(page) for page in pages] == [200, 5]
    read = ids(pages, "offer_id")
    assert (len(read), set(read)) == (205, made)
    cheapest_first = [
        (Decimal(o["price"]), o["created_at"], o["offer_id"]) for page in pages for o in page
    ]
    assert cheapest_first == sorted(cheapest_first)
    small = await pages_of(api, "/offers", "bea", "offer_id", currency="BTC", limit=41)
    assert [len(page) for page in small] == [41] * 5
    assert ids(small, "offer_id") == read
    everything = await pages_of(api, "/offers", "bea", "offer_id", limit=200)
    assert [len(page) for page in everything] == [200, 6]


def encoded(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_a_cursor_this_api_did_not_return_is_400_invalid_cursor(
    api: httpx.AsyncClient, memory_p2p: Any
) -> None:
    trade_id = await escrowed_trade(api, memory_p2p)
    at = "2026-11-30T12:00:00+00:00"
    anywhere = [
        "not a cursor",
        "!!!!",
        "a",
        encoded(b"\xff\xfe|x"),
        encoded("nothing of the kind"),
        encoded(f"t|{at}"),
        encoded(f"o|52000|{at}"),
    ]
    bad = {
        "/trades": [
            *anywhere,
            encoded(f"o|52000|{at}|offer_1"),  # the offer list's
            encoded(f"t|yesterday|{trade_id}"),
            encoded(f"t|2026-11-30T12:00:00|{trade_id}"),  # no offset
            encoded(f"t|0001-01-01T00:00:00+01:00|{trade_id}"),  # before year 1 in UTC
            encoded(f"t|{at}|"),
        ],
        "/offers": [
            *anywhere,
            encoded(f"t|{at}|{trade_id}"),  # the trade list's
            encoded(f"o|NaN|{at}|offer_1"),
            encoded(f"o|Infinity|{at}|offer_1"),
            encoded(f"o|1e5|{at}|offer_1"),
            encoded(f"o|-1|{at}|offer_1"),
            encoded(f"o|{'9' * 35}|{at}|offer_1"),  # more digits than a stored price has
            encoded("o|52000|9999-12-31T23:00:00-02:00|offer_1"),  # after year 9999 in UTC
            encoded(f"o|52000|{at}|"),
        ],
    }
    for path, cursors in bad.items():
        for cursor in cursors:
            response = await api.get(f"{P}{path}", params={"cursor": cursor}, headers=auth("bea"))
            assert response.status_code == 400, (path, cursor, response.text)
            assert response.json() == {
                "error": {
                    "code": "invalid_cursor",
                    "message": "cursor is not one this API returned",
                }
            }, (path, cursor)


async def test_a_limit_out_of_range_is_422_validation_error(
    api: httpx.AsyncClient, memory_p2p: Any
) -> None:
    await escrowed_trade(api, memory_p2p)
    await escrowed_trade(api, memory_p2p)
    for path in ("/trades", "/offers"):
        for limit in ("0", "201", "-1", "ten", "1.5"):
            response = await api.get(f"{P}{path}", params={"limit": limit}, headers=auth("bea"))
            assert response.status_code == 422, (path, limit, response.text)
            assert response.json()["error"]["code"] == "validation_error", (path, limit)
            assert "limit" in response.json()["error"]["message"]
        too_long = await api.get(f"{P}{path}", params={"cursor": "a" * 201}, headers=auth("bea"))
        assert (too_long.status_code, too_long.json()["error"]["code"]) == (422, "validation_error")
        first = (await api.get(f"{P}{path}", params={"limit": 1}, headers=auth("bea"))).json()
        assert len(first["items"]) == 1
        assert first["next_cursor"]
        params = {"limit": "200", "cursor": first["next_cursor"]}
        rest = (await api.get(f"{P}{path}", params=params, headers=auth("bea"))).json()
        assert (len(rest["items"]), rest["next_cursor"]) == (1, None)
        assert rest["items"] != first["items"]
        # Left empty, as a form sends them: the first page, as long as the default.
        blank = await api.get(f"{P}{path}", params={"limit": "", "cursor": ""}, headers=auth("bea"))
        assert (len(blank.json()["items"]), blank.json()["next_cursor"]) == (2, None)


def test_openapi_documents_the_lists_limit_and_cursor(api: httpx.AsyncClient) -> None:
    paths = api.app.openapi()["paths"]  # type: ignore[attr-defined]
    for path in (f"{P}/offers", f"{P}/trades"):
        operation = paths[path]["get"]
        parameters = {p["name"]: p for p in operation["parameters"]}
        assert {"limit", "cursor"} <= set(parameters), path
        assert {"200", "400", "401", "422"} <= set(operation["responses"]), path
