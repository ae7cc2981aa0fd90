"""The pages without a browser: who is signed in (header or cookie), in-place notices, paging,
and the headers every page carries."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from shared.http import make_token
from shared.messaging import CreditCommand
from wallet.application.ledger_service import LedgerService
from wallet.bootstrap import WalletRuntime, build_http_app

PAGES = ["/wallet", "/portfolio", "/savings", "/allocations", "/transactions"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http(runtime: WalletRuntime) -> AsyncIterator[httpx.AsyncClient]:
    await LedgerService(runtime.store).handle_batch(
        [
            CreditCommand(
                user_id="finn",
                currency="LTC",
                amount=f"0.{i + 1:02d}",
                transaction_type="deposit_nowpayments",
                reference_id=f"finn-{i}",
            )
            for i in range(23)
        ]
    )
    transport = httpx.ASGITransport(app=build_http_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as client:
        yield client


def cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"access_token={value}"}


def token(runtime: WalletRuntime, user: str, ttl: float = 3600) -> str:
    return make_token(runtime.settings.auth_jwt_secret, user, ttl=ttl)


@pytest.mark.parametrize("path", PAGES)
async def test_without_a_token_every_page_asks_to_sign_in_and_shows_no_data(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.get(path)
    assert response.status_code == 200
    assert "Sign in to see your wallet." in response.text
    assert "<table" not in response.text
    assert "data-live" not in response.text


async def test_the_token_comes_from_the_header_or_the_cookie(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    by_header = await http.get(
        "/wallet", headers={"Authorization": f"Bearer {token(runtime, 'finn')}"}
    )
    by_cookie = await http.get("/wallet", headers=cookie(token(runtime, "finn")))
    for response in (by_header, by_cookie):
        assert 'data-currency="LTC"' in response.text
        assert '<strong data-testid="user-id">finn</strong>' in response.text


async def test_an_expired_or_forged_token_gets_the_notice_not_an_error(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    expired = await http.get("/wallet", headers=cookie(token(runtime, "finn", ttl=-5)))
    assert (expired.status_code, "Your session has ended" in expired.text) == (200, True)
    forged = make_token("another-secret-of-at-least-32-bytes!", "finn")
    response = await http.get("/wallet", headers=cookie(forged))
    assert "Sign in to see your wallet." in response.text
    assert "LTC" not in response.text


async def test_parts_need_a_token_and_say_so_in_place(http: httpx.AsyncClient) -> None:
    response = await http.get("/parts/balances")
    assert response.status_code == 401
    assert 'class="notice"' in response.text
    assert (await http.get("/parts/nothing")).status_code == 404


async def test_pages_allow_scripts_from_this_origin_only_and_are_never_cached(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    response = await http.get("/portfolio", headers=cookie(token(runtime, "finn")))
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    scripts = re.findall(r"<script[^>]*>", response.text)
    assert scripts
    assert all('src="/static/' in tag for tag in scripts)  # no inline script, no CDN


async def test_history_pages_follow_the_apis_cursor(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    cookies = cookie(token(runtime, "finn"))
    first = await http.get("/transactions", headers=cookies)
    ids = re.findall(r'data-transaction-id="([^"]+)"', first.text)
    assert len(ids) == 20
    (older,) = re.findall(r'href="(/transactions\?cursor=[^"]+)" rel="next"', first.text)
    second = await http.get(older.replace("&amp;", "&"), headers=cookies)
    more = re.findall(r'data-transaction-id="([^"]+)"', second.text)
    api = await http.get(
        "/api/wallets/transactions/finn?limit=100",
        headers={"Authorization": f"Bearer {token(runtime, 'finn')}"},
    )
    assert ids + more == [item["transaction_id"] for item in api.json()["items"]]
    assert 'rel="next"' not in second.text


async def test_a_bad_cursor_is_a_notice_in_place(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    response = await http.get(
        "/transactions?cursor=bm90LWEtY3Vyc29y", headers=cookie(token(runtime, "finn"))
    )
    assert response.status_code == 200
    assert "cursor is not one this API returned" in response.text
    # The request is what is wrong: the notice neither asks again every 5 s nor echoes it.
    assert "hx-get" not in notice_of(response.text)
    assert "bm90LWEtY3Vyc29y" not in response.text


@pytest.mark.parametrize("path", ["/transactions", "/parts/transactions"])
async def test_a_cursor_longer_than_any_the_api_makes_is_refused_not_echoed(
    http: httpx.AsyncClient, runtime: WalletRuntime, path: str
) -> None:
    # A valid cursor padded past the API's 200 characters (base64 ignores nothing after "="):
    # before, it was decoded, and 60 kB of it went into the page and its every-5-s re-poll.
    cursor = "MTc2NDUzMzYwMDAwMHx0eF8x" + "=" * 60_000
    response = await http.get(f"{path}?cursor={cursor}", headers=cookie(token(runtime, "finn")))
    assert response.status_code == 200
    assert "cursor is not one this API returned" in response.text
    assert "=" * 1_000 not in response.text
    assert "hx-get" not in notice_of(response.text)


def notice_of(html: str) -> str:
    (section,) = re.findall(r'<section class="card part unavailable".*?</section>', html, re.S)
    return section


async def test_the_home_page_is_the_wallet(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert (response.status_code, response.headers["location"]) == (307, "/wallet")


async def test_what_a_token_says_is_escaped_on_the_page(
    http: httpx.AsyncClient, runtime: WalletRuntime
) -> None:
    # No whitespace: a token whose subject could not be a command's user id is refused (401).
    hostile = '<img/src=x/onerror="alert(1)">'
    response = await http.get("/wallet", headers=cookie(token(runtime, hostile)))
    assert hostile not in response.text
    assert "&lt;img/src=x/onerror=&#34;alert(1)&#34;&gt;" in response.text
