"""End to end with the real wallet service: NOWPayments simulator → gateway → Kafka → wallet
(its ledger) → results → gateway; balances read from the wallet's HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from ipn_gateway.bootstrap import build_gateway, create_gateway_app
from ipn_gateway.settings import GatewaySettings
from ipn_gateway.simulator import SimulatorSettings, create_simulator_app
from shared.http import make_token
from shared.infra.net import free_port
from shared.messaging.topics import Topics
from shared.testing.services import real_wallet, until_healthy

JWT_SECRET = "wallet-e2e-jwt-secret-of-at-least-32-bytes"
IPN_SECRET = "wallet-e2e-ipn-secret"
API_KEY = "wallet-e2e-api-key"
BTC_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


@dataclass
class System:
    gateway: str
    simulator: str
    wallet: str
    http: httpx.AsyncClient
    until: Callable[..., Awaitable[None]]

    def auth(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}

    async def balance(self, user: str, currency: str) -> tuple[Decimal, Decimal]:
        response = await self.http.get(
            f"{self.wallet}/api/wallets/balances/{user}", headers=self.auth(user)
        )
        assert response.status_code == 200, response.text
        for row in response.json()["balances"]:
            if row["currency"] == currency:
                return Decimal(row["available_balance"]), Decimal(row["locked_balance"])
        return Decimal(0), Decimal(0)

    async def balance_becomes(self, user: str, currency: str, expected: tuple[str, str]) -> None:
        wanted = (Decimal(expected[0]), Decimal(expected[1]))

        async def reached() -> bool:
            return await self.balance(user, currency) == wanted

        await self.until(reached, within=30)

    async def deposit(self, user: str, outcome: str) -> str:
        created = await self.http.post(
            f"{self.gateway}/api/nowpayments/create-deposit",
            json={"currency": "btc", "amount": "100", "price_currency": "usd"},
            headers=self.auth(user),
        )
        assert created.status_code == 200, created.text
        payment_id = str(created.json()["payment_id"])
        for status in ("waiting", "confirming", "finished", "finished", "confirming"):
            fired = await self.http.post(
                f"{self.simulator}/simulator/payments/{payment_id}/ipn",
                json={"status": status, "outcome_amount": outcome},
            )
            assert fired.json()["status_code"] == 200, fired.text
        return payment_id

    async def withdrawal(self, user: str, withdrawal_id: str) -> dict[str, Any]:
        listed = await self.http.get(f"{self.gateway}/api/withdrawals", headers=self.auth(user))
        [item] = [w for w in listed.json()["items"] if w["withdrawal_id"] == withdrawal_id]
        return dict(item)

    async def withdrawal_becomes(
        self, user: str, withdrawal_id: str, status: str
    ) -> dict[str, Any]:
        async def reached() -> bool:
            return (await self.withdrawal(user, withdrawal_id))["status"] == status

        await self.until(reached, within=30)
        return await self.withdrawal(user, withdrawal_id)

    async def request_withdrawal(self, user: str, amount: str) -> str:
        response = await self.http.post(
            f"{self.gateway}/api/withdrawals/request",
            json={"currency": "BTC", "amount": amount, "address": BTC_ADDRESS},
            headers=self.auth(user),
        )
        assert response.status_code == 202, response.text
        return str(response.json()["withdrawal_id"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    serve_app: Callable[[Any, int], AbstractAsyncContextManager[str]],
    until: Callable[..., Awaitable[None]],
) -> AsyncIterator[System]:
    gateway_port, simulator_port = free_port(), free_port()
    simulator = create_simulator_app(
        SimulatorSettings(nowpayments_ipn_secret=IPN_SECRET, nowpayments_api_key=API_KEY)
    )
    gateway = build_gateway(
        GatewaySettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_topic_prefix=kafka_topics.prefix,
            mongodb_url=mongodb_url,
            ipn_gateway_mongodb_database=mongo_database.name,
            auth_jwt_secret=JWT_SECRET,
            ipn_gateway_http_port=gateway_port,
            nowpayments_ipn_secret=IPN_SECRET,
            nowpayments_api_key=API_KEY,
            nowpayments_api_url=f"http://127.0.0.1:{simulator_port}",
            IPN_GATEWAY_RESULTS_CONSUMER_GROUP=f"ipn-gateway-e2e-{gateway_port}",
            IPN_GATEWAY_RESULTS_SESSION_TIMEOUT_MS=3000,
            IPN_GATEWAY_RESULTS_HEARTBEAT_INTERVAL_MS=500,
            withdrawal_decision_wait_seconds=15,
        )
    )
    async with (
        real_wallet(
            kafka_bootstrap_servers, kafka_topics, mongodb_url, mongo_database, JWT_SECRET
        ) as wallet_url,
        serve_app(simulator, simulator_port) as simulator_url,
        serve_app(create_gateway_app(gateway), gateway_port) as gateway_url,
        httpx.AsyncClient(timeout=30.0) as http,
    ):
        await until_healthy(http, gateway_url)
        yield System(gateway_url, simulator_url, wallet_url, http, until)


async def test_deposit_then_withdrawals_through_the_real_ledger(system: System) -> None:
    await system.deposit("amy", "0.01")
    await system.balance_becomes("amy", "BTC", ("0.01", "0"))
    history = await system.http.get(
        f"{system.wallet}/api/wallets/transactions/amy", headers=system.auth("amy")
    )
    deposits = [
        t for t in history.json()["items"] if t["transaction_type"] == "deposit_nowpayments"
    ]
    assert len(deposits) == 1, history.text  # five IPNs, two of them "finished": one credit

    approved_id = await system.request_withdrawal("amy", "0.004")
    await system.withdrawal_becomes("amy", approved_id, "locked")
    await system.balance_becomes("amy", "BTC", ("0.0059", "0.0041"))
    approved = await system.http.post(
        f"{system.gateway}/api/withdrawals/approve",
        json={"withdrawal_id": approved_id},
        headers=system.auth("ops", "admin"),
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    await system.balance_becomes("amy", "BTC", ("0.0059", "0"))

    rejected_id = await system.request_withdrawal("amy", "0.002")
    await system.withdrawal_becomes("amy", rejected_id, "locked")
    rejected = await system.http.post(
        f"{system.gateway}/api/withdrawals/reject",
        json={"withdrawal_id": rejected_id, "reason": "manual check failed"},
        headers=system.auth("ops", "admin"),
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    await system.balance_becomes("amy", "BTC", ("0.0059", "0"))

    too_much = await system.request_withdrawal("amy", "0.0059")  # plus the fee: more than she has
    failed = await system.withdrawal_becomes("amy", too_much, "failed")
    assert failed["reason"] == "insufficient_funds"
    await system.balance_becomes("amy", "BTC", ("0.0059", "0"))
