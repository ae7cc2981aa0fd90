"""The gateway dies after it stored a verified IPN and before its credit reached Kafka. After a
restart, and NOWPayments' resend of the IPN, the user is credited exactly once.

Real Kafka and MongoDB (embedded here), the real wallet with its MongoDB store, the NOWPayments
simulator and the gateway on loopback ports. The crash is made exact, not timed: the gateway's
publisher hangs on the credit, and the gateway is killed while it hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from ipn_gateway.application.ports import CommandPublisher
from ipn_gateway.bootstrap import Gateway, build_gateway, create_gateway_app
from ipn_gateway.settings import GatewaySettings
from ipn_gateway.simulator import SimulatorSettings, create_simulator_app
from shared.http import make_token
from shared.infra.net import free_port
from shared.messaging import CommandResult, WalletCommand
from shared.messaging.topics import Topics
from tests.reliability.runtime import started_wallet, until
from wallet.application.reconciliation import verify
from wallet.settings import WalletSettings

pytestmark = pytest.mark.slow

JWT_SECRET = "reliability-jwt-secret-of-at-least-32-bytes"
IPN_SECRET = "reliability-ipn-secret"
API_KEY = "reliability-api-key"


class HangingPublisher:
    """Publishes everything but a credit, on which it hangs until the process is killed."""

    def __init__(self, inner: CommandPublisher) -> None:
        self._inner = inner
        self.hanging = asyncio.Event()

    async def publish(self, command: WalletCommand) -> None:
        if command.type == "credit":
            self.hanging.set()
            await asyncio.Event().wait()  # never returns: the process dies here
        await self._inner.publish(command)

    async def publish_and_wait(
        self, command: WalletCommand, wait_seconds: float
    ) -> CommandResult | None:
        return await self._inner.publish_and_wait(command, wait_seconds)


@contextlib.asynccontextmanager
async def served(app: FastAPI, port: int) -> AsyncIterator[uvicorn.Server]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(60):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield server
    finally:
        # Also the kill: open requests are not waited for.
        server.should_exit = server.force_exit = True
        await task


async def test_a_credit_interrupted_by_a_crash_is_applied_exactly_once(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    wallet_db = f"{mongo_database.name[:50]}_wallet"
    wallet = await started_wallet(
        WalletSettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_topic_prefix=kafka_topics.prefix,
            mongodb_url=mongodb_url,
            WALLET_MONGODB_DATABASE=wallet_db,
            WALLET_CONSUMER_SESSION_TIMEOUT_MS=3000,
            WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS=500,
        )
    )
    gateway_port, simulator_port = free_port(), free_port()
    settings = GatewaySettings(
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_topic_prefix=kafka_topics.prefix,
        mongodb_url=mongodb_url,
        ipn_gateway_mongodb_database=mongo_database.name,
        auth_jwt_secret=JWT_SECRET,
        ipn_gateway_http_port=gateway_port,
        nowpayments_ipn_secret=IPN_SECRET,
        nowpayments_api_key=API_KEY,
        nowpayments_api_url=f"http://127.0.0.1:{simulator_port}",
        IPN_GATEWAY_RESULTS_CONSUMER_GROUP=f"reliability-gateway-{gateway_port}",
        IPN_GATEWAY_RESULTS_SESSION_TIMEOUT_MS=3000,
        IPN_GATEWAY_RESULTS_HEARTBEAT_INTERVAL_MS=500,
    )
    simulator = create_simulator_app(
        SimulatorSettings(nowpayments_ipn_secret=IPN_SECRET, nowpayments_api_key=API_KEY)
    )
    user = {"Authorization": f"Bearer {make_token(JWT_SECRET, 'dora')}"}
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    simulator_url = f"http://127.0.0.1:{simulator_port}"

    async def credited() -> Decimal:
        wallets = await wallet.store.wallets_of("dora")
        return sum((w.balances.available for w in wallets if w.currency == "BTC"), Decimal(0))

    try:
        async with served(simulator, simulator_port), httpx.AsyncClient(timeout=30) as http:
            # The first gateway process: it will die with the credit in flight.
            first: Gateway = build_gateway(settings)
            hanging = HangingPublisher(first.handlers.ipn.publisher)
            first.handlers.ipn.publisher = hanging
            async with served(create_gateway_app(first), gateway_port):
                created = await http.post(
                    f"{gateway_url}/api/nowpayments/create-deposit",
                    json={"currency": "btc", "amount": "100", "price_currency": "usd"},
                    headers=user,
                )
                assert created.status_code == 200, created.text
                payment_id = str(created.json()["payment_id"])
                ipn = asyncio.create_task(
                    http.post(
                        f"{simulator_url}/simulator/payments/{payment_id}/ipn",
                        json={"status": "finished", "outcome_amount": "0.01"},
                    )
                )
                async with asyncio.timeout(30):
                    await hanging.hanging.wait()
                # Stored before publishing: the credit waits in the payment's outbox.
                stored = await first.handlers.ipn.payments.get(payment_id)
                assert stored is not None
                assert stored.state.credits == 1
                assert [e.published for e in stored.outbox] == [False]
            # Killed. NOWPayments saw its IPN fail, and will send it again.
            delivery = await ipn
            assert delivery.status_code == 502, delivery.text  # the simulator: delivery failed
            await asyncio.sleep(1)
            assert await credited() == 0

            # The restarted gateway publishes what it had recorded, then the resend arrives.
            second = build_gateway(settings)
            async with served(create_gateway_app(second), gateway_port):

                async def credited_once() -> bool:
                    return await credited() == Decimal("0.01")

                await until(credited_once)
                resent = await http.post(
                    f"{simulator_url}/simulator/payments/{payment_id}/ipn",
                    json={"status": "finished", "outcome_amount": "0.01"},
                )
                assert resent.json()["status_code"] == 200, resent.text
                assert resent.json()["response"] == {"status": "duplicate"}
                await asyncio.sleep(1)  # time for a second credit to show, were there one

        assert await credited() == Decimal("0.01")
        credits = [
            o
            async for o in wallet.store.all_outcomes()
            if o.command.user_id == "dora" and o.command.type == "credit"
        ]
        assert [(o.status, o.command.reference_id) for o in credits] == [
            ("applied", f"nowpayments:{payment_id}")
        ]
        assert await verify(wallet.store) == []
    finally:
        await wallet.stop()
        await mongo_database.client.drop_database(wallet_db)
