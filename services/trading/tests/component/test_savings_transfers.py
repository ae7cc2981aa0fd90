"""Savings transfers over the real MongoDB with a wallet double: the status follows the wallet's
result once, and a command whose publication failed is sent again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging import WalletCommand
from trading.savings.adapters.mongo import (
    MOVEMENTS,
    TRANSFERS,
    MongoAccruals,
    MongoSavingsHistory,
    MongoTransfers,
)
from trading.savings.application.service import SavingsService
from trading.testing import AnsweringWallet, FakeClock, result_of


class FlakyWallet(AnsweringWallet):
    def __init__(self) -> None:
        super().__init__()
        self.broker_down = False

    async def send(self, command: WalletCommand, **options: Any) -> Any:
        if self.broker_down:
            raise ConnectionError("broker away")
        return await super().send(command, **options)


@pytest_asyncio.fixture(loop_scope="session")
async def rig(
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> AsyncIterator[tuple[SavingsService, FlakyWallet, FakeClock]]:
    for collection in (MOVEMENTS, TRANSFERS):
        await mongo_database[collection].delete_many({})
    clock, wallet = FakeClock(), FlakyWallet()

    async def caught_up() -> bool:
        return True

    service = SavingsService(
        transfers=MongoTransfers(mongo_database),
        history=MongoSavingsHistory(mongo_database),
        accruals=MongoAccruals(mongo_database),
        wallet=wallet,
        aprs={"USDT": Decimal("0.05")},
        clock=clock,
        history_caught_up=caught_up,
        result_timeout=1.0,
    )
    yield service, wallet, clock


async def test_a_transfer_completes_once(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
) -> None:
    service, wallet, _ = rig
    transfer = await service.request_transfer("amy", "USDT", "100", "to_savings")
    assert transfer["status"] == "pending"
    [command] = wallet.sent
    assert (command.type, command.transaction_type, command.reference_id, command.amount) == (
        "savings_in",
        "savings_deposit",
        f"savings:{transfer['transfer_id']}",
        Decimal("100"),
    )
    applied = result_of(command, "applied", transaction_id="tx-1")
    for _ in range(2):  # a redelivered result changes nothing
        await service.on_transfer_result(applied)
    done = await service.transfer(transfer["transfer_id"], "amy", is_admin=False)
    assert (done["status"], done["transaction_id"]) == ("completed", "tx-1")
    assert await service.positions("amy") == [
        {"currency": "USDT", "savings_balance": "100", "interest_earned": "0"}
    ]
    # A late rejection (it cannot happen, but a result is never trusted to come in order).
    await service.on_transfer_result(result_of(command, "rejected", reason="insufficient_funds"))
    assert (await service.transfer(transfer["transfer_id"], "amy", is_admin=False))["status"] == (
        "completed"
    )

    out = await service.request_transfer("amy", "USDT", "500", "to_wallet")
    await service.on_transfer_result(
        result_of(wallet.sent[-1], "rejected", reason="insufficient_funds")
    )
    failed = await service.transfer(out["transfer_id"], "amy", is_admin=True)
    assert (failed["status"], failed["reason"]) == ("failed", "insufficient_funds")
    assert (await service.positions("amy"))[0]["savings_balance"] == "100"


async def test_an_unpublished_transfer_is_sent_again(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
) -> None:
    service, wallet, clock = rig
    wallet.broker_down = True
    transfer = await service.request_transfer("bob", "USDT", "5", "to_savings")
    assert transfer["status"] == "pending"
    assert wallet.sent == []
    wallet.broker_down = False
    assert await service.resend_pending(timedelta(seconds=30)) == 0  # not yet stale
    clock.advance(31)
    assert await service.resend_pending(timedelta(seconds=30)) == 1
    assert [c.reference_id for c in wallet.sent] == [f"savings:{transfer['transfer_id']}"]
