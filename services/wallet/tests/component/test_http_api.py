"""The wallet's read API over the in-memory store: auth, BOLA, pagination and clear errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from shared.http import make_token
from shared.messaging import CreditCommand, LockCommand, TransferLockedCommand
from wallet.application.ledger_service import LedgerService
from wallet.bootstrap import WalletRuntime, build_http_app, build_runtime
from wallet.domain.registry import REGISTRY
from wallet.settings import WalletSettings


@pytest.fixture(scope="module")
def runtime() -> WalletRuntime:
    # The broker is never started: these tests need the HTTP side only.
    return build_runtime(
        WalletSettings(WALLET_STORE="memory", kafka_bootstrap_servers="127.0.0.1:1")
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http(runtime: WalletRuntime) -> AsyncIterator[httpx.AsyncClient]:
    ledger = LedgerService(runtime.store)
    await ledger.handle_batch(
        [
            *(
                CreditCommand(
                    user_id="alice",
                    currency="BTC",
                    amount="0.1",
                    transaction_type="deposit_nowpayments",
                    reference_id=f"p{i}",
                )
                for i in range(7)
            ),
            CreditCommand(
                user_id="alice",
                currency="ETH",
                amount="2",
                transaction_type="deposit_nowpayments",
                reference_id="e1",
            ),
            LockCommand(
                user_id="alice",
                currency="BTC",
                amount="0.2",
                transaction_type="p2p_escrow",
                reference_id="t1",
            ),
            TransferLockedCommand(
                user_id="alice",
                to_user="bob",
                currency="BTC",
                amount="0.2",
                fee="0.002",
                transaction_type="p2p_completed",
                reference_id="t1",
            ),
        ]
    )
    transport = httpx.ASGITransport(app=build_http_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as client:
        yield client


def auth(runtime: WalletRuntime, user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(runtime.settings.auth_jwt_secret, user, roles)}"}


async def test_balances_are_decimal_strings_with_totals(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    response = await http.get("/api/wallets/balances/alice", headers=auth(runtime, "alice"))
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "alice"
    assert [
        (
            b["currency"],
            b["available_balance"],
            b["locked_balance"],
            b["savings_balance"],
            b["total_balance"],
        )
        for b in body["balances"]
    ] == [("BTC", "0.5", "0", "0", "0.5"), ("ETH", "2", "0", "0", "2")]


async def test_history_pages_newest_first_with_a_cursor(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        query = "?currency=btc&limit=4" + (f"&cursor={cursor}" if cursor else "")
        response = await http.get(
            f"/api/wallets/transactions/alice{query}", headers=auth(runtime, "alice")
        )
        assert response.status_code == 200
        page = response.json()
        seen.extend(f"{i['direction']}:{i['reference_id']}" for i in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["release:t1", "lock:t1", *(f"credit:p{i}" for i in reversed(range(7)))]


async def test_users_read_only_their_own_data_and_admins_read_anyones(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    for path in ("/api/wallets/balances/alice", "/api/wallets/transactions/alice"):
        denied = await http.get(path, headers=auth(runtime, "bob"))
        assert (denied.status_code, denied.json()["error"]["code"]) == (403, "forbidden")
        assert (await http.get(path, headers=auth(runtime, "ops", "admin"))).status_code == 200


async def test_platform_balances_show_collected_fees_to_admins_only(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    assert (
        await http.get("/api/wallets/platform-balances", headers=auth(runtime, "alice"))
    ).status_code == 403
    response = await http.get(
        "/api/wallets/platform-balances", headers=auth(runtime, "ops", "admin")
    )
    assert {(a["account"], a["currency"]): a["balance"] for a in response.json()["accounts"]} == {
        ("external:nowpayments", "BTC"): "-0.7",
        ("external:nowpayments", "ETH"): "-2",
        ("platform:fees", "BTC"): "0.002",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": f"Bearer {make_token('another-secret-of-at-least-32-bytes!', 'alice')}"},
        {
            "Authorization": f"Bearer {make_token('dev-only-jwt-secret-not-for-production', 'alice', ttl=-5)}"
        },
    ],
)
async def test_missing_or_bad_tokens_get_401(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await http.get("/api/wallets/balances/alice", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("?currency=DOGE", 400, "unknown_currency"),
        ("?cursor=%%%", 400, "invalid_cursor"),
        ("?cursor=bm90LWEtY3Vyc29y", 400, "invalid_cursor"),
        ("?limit=0", 422, "validation_error"),
        ("?limit=1000", 422, "validation_error"),
        ("?limit=abc", 422, "validation_error"),
    ],
)
async def test_bad_queries_get_a_4xx_with_a_code(
    http: httpx.AsyncClient, runtime: WalletRuntime, query: str, status: int, code: str
) -> None:
    response = await http.get(
        f"/api/wallets/transactions/alice{query}", headers=auth(runtime, "alice")
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_parameters_left_empty_are_absent(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    """`?currency=&limit=&cursor=`, as the contract writes the route and as a form sends it: no
    filter, the default page. Before, an empty currency was 400 unknown_currency, an empty limit
    or instant 422."""
    headers = auth(runtime, "alice")
    history = "/api/wallets/transactions/alice"
    plain = await http.get(history, headers=headers)
    assert plain.status_code == 200
    assert plain.json()["items"]  # a history to compare
    empty = await http.get(f"{history}?currency=&limit=&cursor=&reference_id=", headers=headers)
    assert (empty.status_code, empty.json()) == (200, plain.json())
    balances = "/api/wallets/balances/alice"
    now = await http.get(balances, headers=headers)
    assert now.json()["balances"]
    assert (await http.get(f"{balances}?at=", headers=headers)).json() == now.json()
    # Empty is absent, not anything goes: an unknown parameter is still refused.
    unknown = await http.get(f"{history}?colour=", headers=headers)
    assert unknown.status_code == 422


async def test_health_is_503_until_the_consumer_joins(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert (response.status_code, response.json()) == (503, {"status": "starting"})


async def test_openapi_and_asyncapi_documents(http: httpx.AsyncClient) -> None:
    openapi = (await http.get("/openapi.json")).json()
    assert "/api/wallets/balances/{user_id}" in openapi["paths"]
    asyncapi = (await http.get("/asyncapi.json")).json()
    addresses = {channel["address"] for channel in asyncapi["channels"].values()}
    assert {
        "wallet.commands",
        "wallet.results",
        "wallet.events",
        "wallet.commands.dlq",
    } <= addresses
    # The commands channel documents every command type and every registered transaction type.
    (commands,) = [c for c in asyncapi["channels"].values() if c["address"] == "wallet.commands"]
    for name in ("settle_trade", "insufficient_liquidity", *REGISTRY):
        assert name in commands["description"], name


async def test_unknown_query_parameters_are_refused(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    response = await http.get(
        "/api/wallets/transactions/alice?limt=5", headers=auth(runtime, "alice")
    )
    assert (response.status_code, response.json()["error"]["code"]) == (422, "validation_error")
