"""GET /api/wallets/portfolio/{user_id} over the in-memory store with prices fed directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio

from shared.http import make_token
from shared.messaging import CreditCommand, LockCommand, SavingsInCommand
from wallet.application.ledger_service import LedgerService
from wallet.application.prices import Quote
from wallet.bootstrap import WalletRuntime, build_http_app

T = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http(runtime: WalletRuntime) -> AsyncIterator[httpx.AsyncClient]:
    def credit(user: str, currency: str, amount: str) -> CreditCommand:
        return CreditCommand(
            user_id=user,
            currency=currency,
            amount=amount,
            transaction_type="deposit_nowpayments",
            reference_id=f"{user}-{currency}",
        )

    await LedgerService(runtime.store).handle_batch(
        [
            credit("erin", "BTC", "0.00333333"),
            credit("erin", "ETH", "1"),
            credit("erin", "GBP", "10.05"),
            credit("erin", "EUR", "20"),
            LockCommand(user_id="erin", currency="ETH", amount="0.25",
                        transaction_type="p2p_escrow", reference_id="erin-t1"),
            SavingsInCommand(user_id="erin", currency="ETH", amount="0.5",
                             transaction_type="savings_deposit", reference_id="erin-s1"),
            credit("saver", "USDT", "1"),
            SavingsInCommand(user_id="saver", currency="USDT", amount="1",
                             transaction_type="savings_deposit", reference_id="saver-s1"),
        ]
    )  # fmt: skip
    runtime.prices.update(Quote("BTC", Decimal("52012.345"), T, "builtin"))
    runtime.prices.update(Quote("ETH", Decimal("2000.005"), T - timedelta(seconds=2), "builtin"))
    runtime.prices.update(Quote("USDT", Decimal("0.79"), T, "builtin"))
    transport = httpx.ASGITransport(app=build_http_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as client:
        yield client


def auth(runtime: WalletRuntime, user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(runtime.settings.auth_jwt_secret, user, roles)}"}


async def test_the_contracts_shape_and_figures(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    response = await http.get(
        "/api/wallets/portfolio/erin?currency=GBP", headers=auth(runtime, "erin")
    )
    assert response.status_code == 200
    body = response.json()
    # BTC 0.00333333 × 52012.345 = 173.37431... ; ETH 1 × 2000.005 = 2000.005 (half-up: 2000.01);
    # GBP 10.05; total 2183.43431... (each value unrounded in the sum).
    assert body == {
        "user_id": "erin",
        "valuation_currency": "GBP",
        "prices_as_of": "2026-11-30T20:59:58Z",  # the oldest price used
        "total_value": "2183.43",
        "assets": [
            {"currency": "ETH", "available_balance": "0.25", "locked_balance": "0.25",
             "savings_balance": "0.5", "holding": "1", "price": "2000.005", "value": "2000.01",
             "percentage": "91.60"},
            {"currency": "BTC", "available_balance": "0.00333333", "locked_balance": "0",
             "savings_balance": "0", "holding": "0.00333333", "price": "52012.345",
             "value": "173.37", "percentage": "7.94"},
            {"currency": "GBP", "available_balance": "10.05", "locked_balance": "0",
             "savings_balance": "0", "holding": "10.05", "price": "1", "value": "10.05",
             "percentage": "0.46"},
            {"currency": "EUR", "available_balance": "20", "locked_balance": "0",
             "savings_balance": "0", "holding": "20", "price": None, "value": None,
             "percentage": None},
        ],
        "allocation": [
            {"label": "ETH", "value": "2000.01", "percentage": "91.60"},
            {"label": "BTC", "value": "173.37", "percentage": "7.94"},
            {"label": "GBP", "value": "10.05", "percentage": "0.46"},
        ],
        "unpriced": ["EUR"],
    }  # fmt: skip


async def test_savings_only_and_no_wallets(http: httpx.AsyncClient, runtime: WalletRuntime) -> None:
    saver = (await http.get("/api/wallets/portfolio/saver", headers=auth(runtime, "saver"))).json()
    assert (
        saver["total_value"],
        saver["assets"][0]["holding"],
        saver["assets"][0]["percentage"],
    ) == (
        "0.79",
        "1",
        "100.00",
    )
    empty = await http.get("/api/wallets/portfolio/nobody", headers=auth(runtime, "nobody"))
    assert (empty.status_code, empty.json()) == (
        200,
        {
            "user_id": "nobody",
            "valuation_currency": "GBP",
            "prices_as_of": None,
            "total_value": "0.00",
            "assets": [],
            "allocation": [],
            "unpriced": [],
        },
    )


async def test_auth_like_the_other_wallet_routes(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    path = "/api/wallets/portfolio/erin"
    assert (await http.get(path)).status_code == 401
    denied = await http.get(path, headers=auth(runtime, "saver"))
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "forbidden")
    assert (await http.get(path, headers=auth(runtime, "ops", "admin"))).status_code == 200


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("?currency=DOGE", 400, "unknown_currency"),
        ("?currency=EUR", 400, "unsupported_valuation_currency"),
        ("?valuation=GBP", 422, "validation_error"),
    ],
)
async def test_bad_queries_get_a_4xx_with_a_code(
    http: httpx.AsyncClient, runtime: WalletRuntime, query: str, status: int, code: str
) -> None:
    response = await http.get(f"/api/wallets/portfolio/erin{query}", headers=auth(runtime, "erin"))
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_an_empty_currency_is_the_default_gbp(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    path = "/api/wallets/portfolio/erin"
    empty = await http.get(f"{path}?currency=", headers=auth(runtime, "erin"))
    assert empty.status_code == 200, empty.text
    assert empty.json() == (await http.get(path, headers=auth(runtime, "erin"))).json()
    assert empty.json()["valuation_currency"] == "GBP"


async def test_lowercase_gbp_is_gbp(http: httpx.AsyncClient, runtime: WalletRuntime) -> None:
    response = await http.get(
        "/api/wallets/portfolio/erin?currency=gbp", headers=auth(runtime, "erin")
    )
    assert response.json()["valuation_currency"] == "GBP"
