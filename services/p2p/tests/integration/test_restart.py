"""A payment deadline survives the p2p process: the service (`python -m p2p`, a real subprocess) is
killed with an escrowed trade pending, stays down past the trade's deadline, and once started
again it cancels the trade and the wallet unlocks the seller's coins."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.infra.net import free_port
from shared.messaging.topics import Topics

D = Decimal
P = "/api/p2p/enhanced"


@contextmanager
def p2p_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "p2p"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


@pytest.mark.timeout(400)
async def test_a_deadline_survives_a_restart(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    wallet_service: Any,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka_topics.prefix,
        "MONGODB_URL": mongodb_url,
        "AUTH_JWT_SECRET": wallet_service.jwt_secret,
        "P2P_HTTP_PORT": str(port),
        "P2P_MONGODB_DATABASE": mongo_database.name,
        "P2P_RESULTS_CONSUMER_GROUP": f"p2p-restart-{port}",
        "P2P_RESULTS_SESSION_TIMEOUT_MS": "3000",
        "P2P_RESULTS_HEARTBEAT_INTERVAL_MS": "500",
    }
    url, log = f"http://127.0.0.1:{port}", tmp_path / "p2p.log"
    auth, eventually = wallet_service.auth, wallet_service.eventually
    seller, buyer = f"lea-{uuid.uuid4().hex[:8]}", f"max-{uuid.uuid4().hex[:8]}"
    await wallet_service.fund(seller, "0.1")

    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:

        async def healthy() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        async def status(trade_id: str) -> str:
            response = await http.get(f"{P}/trades/{trade_id}", headers=auth(buyer))
            return str(response.json()["status"])

        with p2p_process(env, log) as first:
            await eventually(healthy, within=90)
            offer = await http.post(
                f"{P}/offers",
                json={
                    "currency": "BTC",
                    "fiat_currency": "GBP",
                    "price": "52000.00",
                    "min_amount": "0.001",
                    "max_amount": "0.5",
                    "payment_methods": ["bank_transfer"],
                    "payment_window_minutes": 1,
                },
                headers=auth(seller),
            )
            assert offer.status_code == 201, offer.text
            created = await http.post(
                f"{P}/create-trade",
                json={"offer_id": offer.json()["offer_id"], "amount": "0.01"},
                headers=auth(buyer),
            )
            assert created.status_code == 202, created.text
            trade_id = created.json()["trade_id"]
            deadline = datetime.fromisoformat(created.json()["payment_deadline"])

            async def escrowed() -> bool:
                return await status(trade_id) == "escrowed"

            await eventually(escrowed, within=30)
            first.send_signal(signal.SIGKILL)  # a crash, not a graceful stop

        # Down past the deadline: nothing can cancel the trade meanwhile.
        wait = (deadline - datetime.now(UTC) + timedelta(seconds=1)).total_seconds()
        await asyncio.sleep(max(wait, 0))
        stored = await mongo_database["p2p_trades"].find_one({"_id": trade_id})
        assert stored is not None
        assert stored["status"] == "escrowed"
        assert await wallet_service.balance(seller) == (D("0.08999"), D("0.01001"))

        with p2p_process(env, log):
            await eventually(healthy, within=90)
            started = asyncio.get_running_loop().time()

            async def cancelled() -> bool:
                return await status(trade_id) == "cancelled"

            try:
                await eventually(cancelled, within=10)
            except AssertionError:
                pytest.fail(f"not cancelled after the restart; log:\n{log.read_text()[-4000:]}")
            took = asyncio.get_running_loop().time() - started
            assert took < 10
            trade = (await http.get(f"{P}/trades/{trade_id}", headers=auth(seller))).json()
            assert (trade["cancelled_by"], trade["reason"]) == ("system", "payment_deadline_passed")
    assert await wallet_service.balance(seller) == (D("0.1"), D(0))
