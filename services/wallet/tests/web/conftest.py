"""A wallet serving its pages on a real port (in-memory store, prices fed directly), and Debian's
Chromium driven by Playwright. The browser is never downloaded: /usr/bin/chromium or nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn

from shared.http import make_token
from shared.infra.net import free_port
from shared.messaging import CreditCommand, LockCommand, SavingsInCommand, WalletCommand
from wallet.application.ledger_service import LedgerService
from wallet.application.prices import Quote
from wallet.bootstrap import WalletRuntime, build_http_app, build_runtime
from wallet.settings import WalletSettings

CHROMIUM = Path("/usr/bin/chromium")
HAS_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[4] / "build" / "screenshots"
PRICES_AS_OF = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
PRICES = {
    "BTC": "52012.34",
    "ETH": "2012.5",
    "USDT": "0.79",
    "USDC": "0.79",
    "SOL": "118.2",
    "LTC": "61.07",
    "TRX": "0.19",
}


def deposit(user: str, currency: str, amount: str, reference: str) -> CreditCommand:
    return CreditCommand(
        user_id=user,
        currency=currency,
        amount=amount,
        transaction_type="deposit_nowpayments",
        reference_id=reference,
    )


def seed_commands() -> list[WalletCommand]:
    holdings = {
        "BTC": "0.5",
        "ETH": "3.25",
        "USDT": "1200",
        "USDC": "300",
        "SOL": "14",
        "LTC": "2",
        "TRX": "5000",
        "EUR": "150",  # no price: listed, never an error
    }
    commands: list[WalletCommand] = [
        deposit("alice", c, a, f"alice-{c}") for c, a in holdings.items()
    ]
    commands += [
        SavingsInCommand(
            user_id="alice",
            currency="ETH",
            amount="1",
            transaction_type="savings_deposit",
            reference_id="alice-save-1",
        ),
        LockCommand(
            user_id="alice",
            currency="BTC",
            amount="0.1",
            transaction_type="p2p_escrow",
            reference_id="alice-trade-1",
        ),
        deposit("bob", "BTC", "7.77777777", "bob-1"),
        deposit("bob", "GBP", "4321.09", "bob-2"),
    ]
    return commands


class PageServer:
    def __init__(self, runtime: WalletRuntime, base_url: str) -> None:
        self.runtime = runtime
        self.base_url = base_url
        self.ledger = LedgerService(runtime.store)

    def token(self, user: str, *roles: str) -> str:
        return make_token(self.runtime.settings.auth_jwt_secret, user, roles)

    async def api(self, path: str, user: str) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            response = await client.get(
                path, headers={"Authorization": f"Bearer {self.token(user)}"}
            )
        assert response.status_code == 200, response.text
        return response.json()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> AsyncIterator[PageServer]:
    runtime = build_runtime(
        WalletSettings(WALLET_STORE="memory", kafka_bootstrap_servers="127.0.0.1:1")
    )
    await LedgerService(runtime.store).handle_batch(seed_commands())
    for currency, value in PRICES.items():
        runtime.prices.update(Quote(currency, Decimal(value), PRICES_AS_OF, "builtin"))
    port = free_port()
    config = uvicorn.Config(
        build_http_app(runtime), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    uvicorn_server = uvicorn.Server(config)
    # In the test's own event loop: the test's ledger writes and the pages share one store.
    serving = asyncio.create_task(uvicorn_server.serve())
    async with asyncio.timeout(10):
        while not uvicorn_server.started:
            await asyncio.sleep(0.02)
    try:
        yield PageServer(runtime, f"http://127.0.0.1:{port}")
    finally:
        uvicorn_server.should_exit = uvicorn_server.force_exit = True
        await serving


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    if not HAS_CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); CI installs it")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
