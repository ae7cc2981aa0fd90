"""The NOWPayments API client: request shape, and how its failures are reported."""

from __future__ import annotations

import json

import httpx
import pytest

from ipn_gateway.adapters.nowpayments import NowPaymentsClient
from ipn_gateway.domain.errors import UpstreamRefused, UpstreamUnavailable

ARGS = {
    "price_amount": "100.5",
    "price_currency": "usd",
    "pay_currency": "btc",
    "order_id": "dep_1",
    "order_description": "Deposit BTC",
    "ipn_callback_url": "http://127.0.0.1:8002/api/nowpayments/ipn",
}


def client(handler: httpx.MockTransport) -> NowPaymentsClient:
    return NowPaymentsClient(httpx.AsyncClient(transport=handler, base_url="http://np"), "key-1")


async def test_creates_a_payment_with_the_api_key_and_a_numeric_price() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = (
            b'{"payment_id":"5077125051","pay_address":"bc1qx","pay_currency":"btc",'
            b'"pay_amount":5e-7,"price_amount":100.5,"price_currency":"usd"}'
        )
        return httpx.Response(201, content=body)

    created = await client(httpx.MockTransport(answer)).create_payment(**ARGS)
    assert (created.payment_id, created.pay_amount, created.price_amount) == (
        "5077125051",
        "0.0000005",
        "100.5",
    )
    [request] = seen
    assert (request.url.path, request.headers["x-api-key"]) == ("/v1/payment", "key-1")
    sent = json.loads(request.content, parse_float=str)
    assert sent["price_amount"] == "100.5"  # a JSON number with the exact decimal text
    assert sent["ipn_callback_url"] == ARGS["ipn_callback_url"]


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (httpx.Response(500, text="oops"), UpstreamUnavailable, "nowpayments_unavailable"),
        (httpx.Response(200, text="<html>"), UpstreamUnavailable, "nowpayments_unavailable"),
        (
            httpx.Response(201, json={"payment_id": "1"}),
            UpstreamUnavailable,
            "nowpayments_unavailable",
        ),
        (
            httpx.Response(403, json={"code": "INVALID_API_KEY"}),
            UpstreamUnavailable,
            "nowpayments_unavailable",
        ),
        (
            httpx.Response(400, json={"code": "AMOUNT_MINIMAL_ERROR", "message": "too small"}),
            UpstreamRefused,
            "nowpayments_amount_minimal_error",
        ),
    ],
)
async def test_failures(response: httpx.Response, error: type[Exception], code: str) -> None:
    with pytest.raises(error) as raised:
        await client(httpx.MockTransport(lambda _: response)).create_payment(**ARGS)
    assert raised.value.code == code  # type: ignore[attr-defined]


async def test_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailable):
        await client(httpx.MockTransport(refuse)).create_payment(**ARGS)
