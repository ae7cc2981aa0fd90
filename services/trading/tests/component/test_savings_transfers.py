"""Savings transfers over the real MongoDB with a wallet double: the status follows the wallet's
result once, a command whose publication failed is sent again, and an Idempotency-Key moves the
money once even when its first request stopped without an answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import httpx
import pytest_asyncio
from bson import Decimal128
from pymongo.asynchronous.database import AsyncDatabase
from structlog.testing import capture_logs

from shared.http import create_app
from shared.http.idempotency import KeyRecord, MemoryIdempotencyStore, StoredResponse
from shared.messaging import WalletCommand
from trading.bootstrap import install_trading_errors
from trading.savings.adapters.mongo import (
    MOVEMENTS,
    TRANSFERS,
    MongoAccruals,
    MongoSavingsHistory,
    MongoTransfers,
)
from trading.savings.application.service import RESEND_PAGE, SavingsService
from trading.savings.entrypoints import savings_routes
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
    # A refusal of another user's command under this reference is not this transfer's answer.
    await service.on_transfer_result(result_of(command, "rejected", user_id="mallory"))
    assert (await service.transfer(transfer["transfer_id"], "amy", is_admin=False))["status"] == (
        "pending"
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


async def test_a_result_of_another_command_type_under_the_reference_settles_nothing(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
) -> None:
    service, wallet, _ = rig
    transfer = await service.request_transfer("ann", "USDT", "40", "to_savings")
    [command] = wallet.sent
    # The saver's own id and the transfer's reference, but not its savings_in: a refusal of
    # another producer's command (a credit, a savings_out) says nothing of this transfer.
    for other_type in ("credit", "savings_out"):
        foreign = result_of(command, "rejected", reason="unknown_transaction_type")
        await service.on_transfer_result(foreign.model_copy(update={"type": other_type}))
    stored = await service.transfer(transfer["transfer_id"], "ann", is_admin=False)
    assert (stored["status"], stored["reason"]) == ("pending", None)
    await service.on_transfer_result(result_of(command, "applied", transaction_id="tx-ann"))
    done = await service.transfer(transfer["transfer_id"], "ann", is_admin=False)
    assert done["status"] == "completed"
    assert (await service.positions("ann"))[0]["savings_balance"] == "40"


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


async def test_a_pending_transfer_is_sent_again_once_per_period_not_on_every_pass(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
) -> None:
    """The resend runs every few seconds; a transfer still pending (its result lost again, or the
    wallet slow) was sent again on every one of them once it was older than the delay."""
    service, wallet, clock = rig
    wallet.broker_down = True
    transfer = await service.request_transfer("gil", "USDT", "3", "to_savings")
    wallet.broker_down = False
    stale = timedelta(seconds=30)
    clock.advance(31)
    assert await service.resend_pending(stale) == 1
    for _ in range(5):
        clock.advance(5)  # a pass every few seconds
        assert await service.resend_pending(stale) == 0
    clock.advance(6)  # 31 s after it was sent again
    assert await service.resend_pending(stale) == 1
    assert [c.reference_id for c in wallet.sent] == [f"savings:{transfer['transfer_id']}"] * 2


def _unsendable_transfer(transfer_id: str, created_at: datetime) -> dict[str, Any]:
    """A pending transfer as an earlier version stored it for a token subject with a space: no
    wallet command can carry its user id."""
    return {
        "_id": transfer_id,
        "user_id": "old user",
        "currency": "USDT",
        "amount": Decimal128("7"),
        "direction": "to_savings",
        "status": "pending",
        "reason": None,
        "transaction_id": None,
        "created_at": created_at,
        "updated_at": created_at,
    }


async def _behind_unsendable(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
    database: AsyncDatabase[dict[str, Any]],
    unsendable_ids: list[str],
) -> dict[str, Any]:
    """Unsendable transfers made an hour ago (oldest first, in the order given), then a good
    transfer whose first send failed (the broker away), and the clock on past the resend delay:
    that transfer is due to be sent again."""
    service, wallet, clock = rig
    an_hour_ago = clock() - timedelta(hours=1)
    await database[TRANSFERS].insert_many(
        [
            _unsendable_transfer(transfer_id, an_hour_ago + timedelta(seconds=n))
            for n, transfer_id in enumerate(unsendable_ids)
        ]
    )
    wallet.broker_down = True
    good = await service.request_transfer("gil", "USDT", "3", "to_savings")
    wallet.broker_down = False
    clock.advance(31)
    return good


async def test_a_transfer_whose_command_cannot_be_built_holds_back_no_other_resend(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    service, wallet, _ = rig
    # Stored by an earlier version that took a token subject with a space for a user id: no
    # wallet command can carry it, and its first send failed as every resend will.
    good = await _behind_unsendable(rig, mongo_database, ["old-transfer"])
    with capture_logs() as logs:
        assert await service.resend_pending(timedelta(seconds=30)) == 1
    assert [c.reference_id for c in wallet.sent] == [f"savings:{good['transfer_id']}"]
    [unsendable] = [e for e in logs if e["event"] == "savings.transfer_unsendable"]
    assert (unsendable["transfer_id"], unsendable["log_level"]) == ("old-transfer", "error")
    assert unsendable["reason"].startswith("invalid_field")
    assert (await service.transfer("old-transfer", "old user", is_admin=False))["status"] == (
        "pending"
    )


async def test_a_page_of_transfers_that_cannot_be_sent_holds_back_no_transfer_behind_it(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    service, wallet, _ = rig
    # As many as a pass takes, older than any other, each logged and left pending every time.
    good = await _behind_unsendable(
        rig, mongo_database, [f"old-{n:03}" for n in range(RESEND_PAGE)]
    )
    stale = timedelta(seconds=30)
    assert await service.resend_pending(stale) == 0  # the first page: none can be sent
    assert await service.resend_pending(stale) == 1  # the next one goes on after it
    assert [c.reference_id for c in wallet.sent] == [f"savings:{good['transfer_id']}"]
    assert await service.resend_pending(stale) == 0  # from the oldest again
    assert await service.resend_pending(stale) == 0  # sent again just now: not yet due
    assert len(wallet.sent) == 1


class LostAnswerStore(MemoryIdempotencyStore):
    """The first answer is lost (storing it fails: that request answers 500), and every claim
    reads as older than the 60 s after which a claim without an answer is taken over."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next_answer = True

    async def store_response(
        self, scope: str, user_id: str, key: str, token: str, response: StoredResponse
    ) -> bool:
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ConnectionError("primary stepped down")
        return await super().store_response(scope, user_id, key, token, response)

    async def find(self, scope: str, user_id: str, key: str) -> KeyRecord | None:
        found = await super().find(scope, user_id, key)
        if found is None:
            return None
        return replace(found, claimed_at=found.claimed_at - timedelta(seconds=61))


async def test_a_transfer_of_33_digits_is_recorded_exactly(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    service, wallet, _ = rig
    # The most digits an ETH amount may have (below 10^15, 18 decimals): more than the 28 of
    # Python's default decimal context.
    amount = "123456789012345.123456789012345678"
    out = await service.request_transfer("fay", "ETH", amount, "to_wallet")
    await service.on_transfer_result(result_of(wallet.sent[-1], "applied", transaction_id="tx-fay"))
    assert (await service.transfer(out["transfer_id"], "fay", is_admin=False))["status"] == (
        "completed"
    )
    row = await mongo_database[MOVEMENTS].find_one({"user_id": "fay"})
    assert row is not None
    assert row["amount"].to_decimal() == Decimal(f"-{amount}")  # (unary minus rounds too)
    assert (await service.positions("fay"))[0]["savings_balance"] == f"-{amount}"


TRANSFER_URL: Final = "/api/savings/transfer"
BODY: Final = {"currency": "USDT", "amount": "100", "direction": "to_savings"}


@asynccontextmanager
async def savings_http(
    service: SavingsService, store: MemoryIdempotencyStore, jwt_secret: str
) -> AsyncIterator[httpx.AsyncClient]:
    async def ready() -> bool:
        return True

    app = create_app(title="trading-test", auth_secret=jwt_secret, ready=ready)
    install_trading_errors(app)
    app.include_router(savings_routes(service, store))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 is an answer
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as http:
        yield http


async def test_a_retry_after_a_lost_answer_moves_the_money_once(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
    mongo_database: AsyncDatabase[dict[str, Any]],
    jwt_secret: str,
    auth_headers: Any,
) -> None:
    service, wallet, _ = rig
    headers = {**auth_headers("cat"), "Idempotency-Key": "save-100"}
    async with savings_http(service, LostAnswerStore(), jwt_secret) as http:
        # The transfer is stored and its command sent, then the answer is lost: 500.
        assert (await http.post(TRANSFER_URL, json=BODY, headers=headers)).status_code == 500
        # The retry takes the stale claim over and runs again: it finds the same transfer.
        retry = await http.post(TRANSFER_URL, json=BODY, headers=headers)
        assert retry.status_code == 202, retry.text
        replayed = await http.post(TRANSFER_URL, json=BODY, headers=headers)
        assert (replayed.status_code, replayed.json()) == (202, retry.json())
        assert replayed.headers["Idempotent-Replayed"] == "true"
        transfer_id = retry.json()["transfer_id"]
        assert await mongo_database[TRANSFERS].count_documents({"user_id": "cat"}) == 1
        [command] = wallet.sent
        assert (command.reference_id, command.amount) == (f"savings:{transfer_id}", Decimal(100))
        # Another user's same key is another transfer.
        dans = {**auth_headers("dan"), "Idempotency-Key": "save-100"}
        dan = await http.post(TRANSFER_URL, json=BODY, headers=dans)
        assert dan.status_code == 202, dan.text
    assert dan.json()["transfer_id"] != transfer_id
    assert len(wallet.sent) == 2


async def test_a_key_that_named_a_transfer_names_no_other(
    rig: tuple[SavingsService, FlakyWallet, FakeClock],
    mongo_database: AsyncDatabase[dict[str, Any]],
    jwt_secret: str,
    auth_headers: Any,
) -> None:
    service, wallet, _ = rig
    store = MemoryIdempotencyStore()
    headers = {**auth_headers("eve"), "Idempotency-Key": "save-100"}
    async with savings_http(service, store, jwt_secret) as http:
        first = await http.post(TRANSFER_URL, json=BODY, headers=headers)
        assert first.status_code == 202, first.text
        # Once the key's 24 hours are over the idempotency layer has forgotten it (each time
        # below): the transfer the key names decides alone.
        store.records.clear()
        same = await http.post(TRANSFER_URL, json={**BODY, "amount": "100.00"}, headers=headers)
        assert (same.status_code, same.json()) == (202, first.json())
        for other in ({**BODY, "amount": "101"}, {**BODY, "direction": "to_wallet"}):
            store.records.clear()
            refused = await http.post(TRANSFER_URL, json=other, headers=headers)
            assert (refused.status_code, refused.json()["error"]["code"]) == (
                409,
                "idempotency_conflict",
            )
    assert len(wallet.sent) == 1
    assert await mongo_database[TRANSFERS].count_documents({"user_id": "eve"}) == 1
