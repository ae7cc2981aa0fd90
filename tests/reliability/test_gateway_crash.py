"""The gateway dies after it stored a verified IPN and before its credit reached Kafka. After a
restart, and NOWPayments' resend of the IPN, the user is credited exactly once.

Real Kafka and MongoDB (embedded here), the real wallet with its MongoDB store, the NOWPayments
simulator, and the gateway as a process of its own on a loopback port. The crash is made exact,
not timed: the gateway's publisher hangs on the credit, and the process is SIGKILLed while it
hangs (nothing of it survives: no relay, no consumer). The restart is `python -m ipn_gateway`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from ipn_gateway.adapters.mongo import MongoPayments
from ipn_gateway.simulator import SimulatorSettings, create_simulator_app
from shared.http import make_token
from shared.infra.net import free_port
from shared.messaging.topics import Topics
from tests.reliability.runtime import started_wallet, until
from wallet.application.reconciliation import verify
from wallet.settings import WalletSettings

pytestmark = pytest.mark.slow

JWT_SECRET = "reliability-jwt-secret-of-at-least-32-bytes"
IPN_SECRET = "reliability-ipn-secret"
API_KEY = "reliability-api-key"
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def gateway_process(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A gateway in its own process (its relay, consumer and publisher die with it)."""
    process = subprocess.Popen(
        [sys.executable, *args], env={**os.environ, **env}, cwd=ROOT, start_new_session=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


async def healthy(http: httpx.AsyncClient, url: str, process: subprocess.Popen[bytes]) -> None:
    async def answers() -> bool:
        assert process.poll() is None, "the gateway process exited"
        try:
            return (await http.get(f"{url}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await until(answers, within=90)


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
    tmp_path: Path,
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
    marker = tmp_path / "hanging"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka_topics.prefix,
        "MONGODB_URL": mongodb_url,
        "IPN_GATEWAY_MONGODB_DATABASE": mongo_database.name,
        "AUTH_JWT_SECRET": JWT_SECRET,
        "IPN_GATEWAY_HTTP_PORT": str(gateway_port),
        "NOWPAYMENTS_IPN_SECRET": IPN_SECRET,
        "NOWPAYMENTS_API_KEY": API_KEY,
        "NOWPAYMENTS_API_URL": f"http://127.0.0.1:{simulator_port}",
        "IPN_GATEWAY_RESULTS_CONSUMER_GROUP": f"reliability-gateway-{gateway_port}",
        "IPN_GATEWAY_RESULTS_SESSION_TIMEOUT_MS": "3000",
        "IPN_GATEWAY_RESULTS_HEARTBEAT_INTERVAL_MS": "500",
        "IPN_GATEWAY_OUTBOX_RELAY_INTERVAL_SECONDS": "1",
        "GATEWAY_HANG_MARKER": str(marker),
        "LOG_LEVEL": "WARNING",
    }
    simulator = create_simulator_app(
        SimulatorSettings(nowpayments_ipn_secret=IPN_SECRET, nowpayments_api_key=API_KEY)
    )
    user = {"Authorization": f"Bearer {make_token(JWT_SECRET, 'dora')}"}
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    simulator_url = f"http://127.0.0.1:{simulator_port}"
    payments = MongoPayments(mongo_database)

    async def credited() -> Decimal:
        wallets = await wallet.store.wallets_of("dora")
        return sum((w.balances.available for w in wallets if w.currency == "BTC"), Decimal(0))

    try:
        async with served(simulator, simulator_port), httpx.AsyncClient(timeout=30) as http:
            # The first gateway process: it will die with the credit in flight.
            script = str(Path(__file__).with_name("gateway_process.py"))
            with gateway_process(env, script) as first:
                await healthy(http, gateway_url, first)
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

                async def hanging() -> bool:
                    return marker.exists()

                await until(hanging, within=30)
                # Stored before publishing: the credit waits in the payment's outbox.
                stored = await payments.get(payment_id)
                assert stored is not None
                assert stored.state.credits == 1
                assert [e.published for e in stored.outbox] == [False]
                os.killpg(first.pid, signal.SIGKILL)
                assert first.wait(timeout=10) == -signal.SIGKILL
            # Killed. NOWPayments saw its IPN fail, and will send it again.
            delivery = await ipn
            assert delivery.status_code == 502, delivery.text  # the simulator: delivery failed
            await asyncio.sleep(2)
            assert await credited() == 0  # nothing of the dead process published it

            # The restarted gateway publishes what it had recorded, then the resend arrives.
            with gateway_process(env, "-m", "ipn_gateway") as second:
                await healthy(http, gateway_url, second)

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
