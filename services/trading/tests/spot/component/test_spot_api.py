"""The spot routes' refusals and documentation, on an app that is not started: every refusal
below happens before anything is stored or sent (no broker, no database needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from trading.bootstrap import build_service, create_trading_app
from trading.settings import TradingSettings
from trading.spot.feature import build_spot_feature


def app(secret: str) -> Any:
    settings = TradingSettings(
        auth_jwt_secret=secret,
        kafka_bootstrap_servers="127.0.0.1:1",
        mongodb_url="mongodb://127.0.0.1:1/?directConnection=true",
    )
    return create_trading_app(build_service(settings, features=[build_spot_feature]))


@pytest_asyncio.fixture
async def http(jwt_secret: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app(jwt_secret))
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as client:
        yield client


LIMIT = {"pair": "BTC-GBP", "side": "buy", "type": "limit", "amount": "0.01", "price": "52000.00"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"pair": "DOGE-GBP"}, "unknown_market"),
        ({"price": None}, "price_required"),
        ({"price": "52000.001"}, "price_off_tick"),
        ({"amount": "0.000001"}, "amount_off_step"),
        ({"amount": "0.00001"}, "amount_below_minimum"),
        ({"amount": "-0.01"}, "amount_not_positive"),
        ({"amount": "NaN"}, "amount_not_a_number"),
        ({"amount": "1e400"}, "amount_too_large"),
        ({"price": "0.01", "amount": "0.0001"}, "order_too_small"),  # 0.000001 GBP
        ({"quote_amount": "10.00"}, "quote_amount_not_allowed"),
        ({"type": "market"}, "price_not_allowed"),
        ({"type": "market", "price": None, "quote_amount": "10.00"}, "amount_or_quote_amount"),
        ({"type": "market", "price": None, "amount": None}, "amount_or_quote_amount"),
        ({"side": "sell", "type": "market", "price": None, "amount": None}, "amount_required"),
        (
            {"type": "market", "price": None, "amount": None, "quote_amount": "0.001"},
            "amount_too_precise",
        ),
        ({"type": "market", "price": None, "expires_in_seconds": 60}, "expiry_not_allowed"),
        # 1 penny: at any price, the seller's fee on it (rounded up) is all of it; it was locked
        # and then failed as `slippage`
        (
            {"type": "market", "price": None, "amount": None, "quote_amount": "0.01"},
            "order_too_small",
        ),
        ({"expires_in_seconds": 0}, "validation_error"),
        # A number of seconds is a JSON integer: lax, `true` was read as 1 s and "60" as 60 s.
        ({"expires_in_seconds": True}, "validation_error"),
        ({"expires_in_seconds": False}, "validation_error"),
        ({"expires_in_seconds": "60"}, "validation_error"),
        ({"expires_in_seconds": 60.0}, "validation_error"),
        ({"expires_in_seconds": [60]}, "validation_error"),
        # what the order would lock is more than a wallet amount of its currency can be
        ({"pair": "ETH-GBP", "side": "sell", "amount": "1000000000000000"}, "amount_too_large"),
        ({"amount": "1000000", "price": "1000000000000.00"}, "amount_too_large"),
    ],
)
async def test_bad_orders_are_refused_with_a_stable_code(
    http: httpx.AsyncClient,
    auth_headers: Callable[..., dict[str, str]],
    change: dict[str, Any],
    code: str,
) -> None:
    body = {k: v for k, v in {**LIMIT, **change}.items() if v is not None}
    response = await http.post("/api/trading/execute", json=body, headers=auth_headers("amy"))
    assert (response.status_code, response.json()["error"]["code"]) == (422, code), response.text


async def test_malformed_requests_and_missing_tokens(
    http: httpx.AsyncClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    assert (await http.post("/api/trading/execute", json=LIMIT)).status_code == 401
    assert (await http.get("/api/trading/orders")).status_code == 401
    assert (await http.delete("/api/trading/orders/x")).status_code == 401
    for bad in ({**LIMIT, "amount": 0.01}, {**LIMIT, "side": "hold"}, {**LIMIT, "user_id": "bob"}):
        response = await http.post("/api/trading/execute", json=bad, headers=auth_headers("amy"))
        assert response.status_code == 422, response.text
        assert set(response.json()["error"]) >= {"code", "message"}
    # An unknown status, or a parameter the list does not take, is refused, not ignored; so is
    # a page size out of range or a cursor longer than any the list returns.
    for params in (
        {"status": "done"},
        {"": "0"},
        {"user_id": "bob"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "1.5"},
        {"cursor": "c" * 201},
    ):
        listed = await http.get("/api/trading/orders", params=params, headers=auth_headers("amy"))
        assert (listed.status_code, listed.json()["error"]["code"]) == (422, "validation_error")
    # A cursor the list did not return: 400, before anything is read.
    for cursor in ("nope", "c3w", "dHwxfHg"):
        listed = await http.get(
            "/api/trading/orders", params={"cursor": cursor}, headers=auth_headers("amy")
        )
        assert (listed.status_code, listed.json()["error"]["code"]) == (400, "invalid_cursor")


async def test_markets_are_listed_without_a_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/trading/markets")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [m["pair"] for m in items] == ["BTC-GBP", "ETH-GBP", "ETH-BTC", "BTC-USDT"]
    assert items[0] == {
        "pair": "BTC-GBP",
        "base": "BTC",
        "quote": "GBP",
        "price_tick": "0.01",
        "amount_step": "0.00001",
        "min_amount": "0.0001",
    }


def test_openapi_documents_every_error_answer(jwt_secret: str) -> None:
    paths = app(jwt_secret).openapi()["paths"]
    expected = {
        ("/api/trading/execute", "post"): {"401", "409", "422"},
        ("/api/trading/orders", "get"): {"400", "401", "422"},
        ("/api/trading/orders/{order_id}", "get"): {"401", "404", "422"},
        ("/api/trading/orders/{order_id}", "delete"): {"401", "404", "409", "422"},
        ("/api/trading/orderbook/{pair}", "get"): {"404"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, set(responses))
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorBody")
    assert "202" in paths["/api/trading/execute"]["post"]["responses"]
    assert "202" in paths["/api/trading/orders/{order_id}"]["delete"]["responses"]
