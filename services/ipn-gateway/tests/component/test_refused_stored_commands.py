"""A withdrawal holding a command the command model now refuses (stored by an earlier version: a
user id from a token subject with a space), over the memory stores and over MongoDB: reading it
failed on MongoDB, and with it the ask-again pass on every run (holding back every other
withdrawal) and its GET. It is read all the same; what sends it reports it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase
from structlog.testing import capture_logs

from ipn_gateway.adapters.memory import MemoryWithdrawals, RecordingPublisher
from ipn_gateway.adapters.mongo import WITHDRAWALS, MongoWithdrawals, ensure_indexes
from ipn_gateway.application.records import Withdrawal
from ipn_gateway.application.withdrawals import WithdrawalHandler
from ipn_gateway.domain.withdrawals import WithdrawalPolicy, WithdrawalStatus
from ipn_gateway.entrypoints.http import include_routes
from shared.http import create_app, make_token
from shared.http.auth import ADMIN_ROLE
from shared.http.idempotency import MemoryIdempotencyStore
from shared.messaging import CommandResult

SECRET = "component-jwt-secret-of-at-least-32-bytes"
REFUSED = "old user"
BTC_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
POLICY = WithdrawalPolicy(
    fees={"BTC": Decimal("0.0001")},
    max_per_request={"BTC": Decimal("2")},
    daily_limit={"BTC": Decimal("3")},
    max_open_per_user=5,
)


@dataclass
class Clock:
    now: datetime = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Gateway:
    handler: WithdrawalHandler
    publisher: RecordingPublisher
    clock: Clock
    # Makes a withdrawal's first command one the model refuses, as an earlier version stored it.
    plant: Callable[[str], Awaitable[None]]
    # Makes a withdrawal's user id one no wallet command can carry, as an earlier version stored it.
    plant_user: Callable[[str], Awaitable[None]]


@pytest_asyncio.fixture
async def gateway(
    memory_or_mongo: AsyncDatabase[dict[str, Any]] | None,
) -> AsyncIterator[Gateway]:
    clock = Clock()
    publisher = RecordingPublisher(answer=None)  # the wallet's answers never come back
    database = memory_or_mongo
    if database is None:
        memory = MemoryWithdrawals()

        async def plant_in_memory(withdrawal_id: str) -> None:
            stored = memory.withdrawals[withdrawal_id]
            entry = stored.outbox[0]
            assert entry.command is not None
            refused = entry.command.model_copy(update={"user_id": REFUSED})
            outbox = (replace(entry, command=refused), *stored.outbox[1:])
            memory.withdrawals[withdrawal_id] = replace(stored, outbox=outbox)

        async def plant_user_in_memory(withdrawal_id: str) -> None:
            stored = memory.withdrawals[withdrawal_id]
            memory.withdrawals[withdrawal_id] = replace(stored, user_id=REFUSED)

        handler = WithdrawalHandler(memory, publisher, POLICY, clock=clock)
        yield Gateway(handler, publisher, clock, plant_in_memory, plant_user_in_memory)
        return
    await ensure_indexes(database)

    async def plant_in_mongo(withdrawal_id: str) -> None:
        await database[WITHDRAWALS].update_one(
            {"_id": withdrawal_id}, {"$set": {"outbox.0.command.user_id": REFUSED}}
        )

    async def plant_user_in_mongo(withdrawal_id: str) -> None:
        await database[WITHDRAWALS].update_one(
            {"_id": withdrawal_id}, {"$set": {"user_id": REFUSED}}
        )

    handler = WithdrawalHandler(MongoWithdrawals(database), publisher, POLICY, clock=clock)
    try:
        yield Gateway(handler, publisher, clock, plant_in_mongo, plant_user_in_mongo)
    finally:
        await database.client.drop_database(database.name)


async def withdrawal(gateway: Gateway, *, refused: bool = False) -> Withdrawal:
    """A withdrawal whose lock was sent and whose result never came; with `refused`, its lock as
    an earlier version stored it."""
    made = await gateway.handler.request("alice", "BTC", "0.004", BTC_ADDRESS)
    if refused:
        await gateway.plant(made.withdrawal_id)
    gateway.clock.advance(timedelta(seconds=1))
    return made


async def test_the_ask_again_pass_asks_about_the_others(gateway: Gateway) -> None:
    first = await withdrawal(gateway)
    stuck = await withdrawal(gateway, refused=True)
    last = await withdrawal(gateway)
    sent = list(gateway.publisher.published)
    gateway.clock.advance(gateway.handler.ask_again_after)
    with capture_logs() as logs:
        assert await gateway.handler.ask_again() == 2
    again = gateway.publisher.published[len(sent) :]
    assert [c.reference_id for c in again] == [
        f"withdrawal:{first.withdrawal_id}",
        f"withdrawal:{last.withdrawal_id}",
    ]
    [logged] = [e for e in logs if e["event"] == "withdrawal.command_unsendable"]
    assert (logged["withdrawal_id"], logged["log_level"]) == (stuck.withdrawal_id, "error")
    assert logged["command_id"] == stuck.outbox[0].command_id
    assert logged["reason"].startswith("invalid_field: user_id")
    left = await gateway.handler.withdrawals.get(stuck.withdrawal_id)
    assert left is not None
    assert (left.status, left.updated_at, left.asked_at) == (
        WithdrawalStatus.PENDING,
        stuck.updated_at,
        None,
    )


async def test_its_get_and_the_listing_answer(gateway: Gateway) -> None:
    stuck = await withdrawal(gateway, refused=True)
    app = _app(gateway)
    headers = {"Authorization": f"Bearer {make_token(SECRET, 'alice', ())}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        got = await client.get(f"/api/withdrawals/{stuck.withdrawal_id}", headers=headers)
        assert got.status_code == 200, got.text
        assert (got.json()["withdrawal_id"], got.json()["status"]) == (
            stuck.withdrawal_id,
            "pending",
        )
        mine = await client.get("/api/withdrawals", headers=headers)
        assert mine.status_code == 200, mine.text
        assert stuck.withdrawal_id in mine.text


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_decision_whose_command_cannot_be_built_is_refused(
    gateway: Gateway, decision: str
) -> None:
    """An admin deciding on a locked withdrawal whose user id an earlier version stored with a
    space: its release or unlock cannot be built, and the request failed with a 500. It is
    refused with 409 `withdrawal_unsendable`, nothing moves, and it is logged for an engineer."""
    made = await withdrawal(gateway)
    [lock] = gateway.publisher.published
    await gateway.handler.apply_result(
        CommandResult(
            command_id=lock.command_id,
            type=lock.type,
            transaction_type=lock.transaction_type,
            reference_id=lock.reference_id,
            user_id=lock.user_id,
            status="applied",
        )
    )
    await gateway.plant_user(made.withdrawal_id)
    before = await gateway.handler.withdrawals.get(made.withdrawal_id)
    assert before is not None
    assert before.status is WithdrawalStatus.LOCKED
    app = _app(gateway)
    token = make_token(SECRET, "ops", (ADMIN_ROLE,))
    body = {"withdrawal_id": made.withdrawal_id, "reason": "address on a sanctions list"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        with capture_logs() as logs:
            answer = await client.post(
                f"/api/withdrawals/{decision}",
                json=body if decision == "reject" else {"withdrawal_id": made.withdrawal_id},
                headers={"Authorization": f"Bearer {token}"},
            )
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "withdrawal_unsendable")
    assert await gateway.handler.withdrawals.get(made.withdrawal_id) == before
    assert gateway.publisher.published == [lock]
    [logged] = [e for e in logs if e["event"] == "withdrawal.decision_unsendable"]
    assert (logged["withdrawal_id"], logged["decision"], logged["by"]) == (
        made.withdrawal_id,
        decision,
        "ops",
    )
    assert (logged["log_level"], logged["reason"][:22]) == ("error", "invalid_field: user_id")


def _app(gateway: Gateway) -> FastAPI:
    """The gateway's routes over the withdrawals handler (the others are not reached)."""
    app = create_app(title="ipn-gateway", auth_secret=SECRET, ready=_ready)
    handlers = SimpleNamespace(
        withdrawals=gateway.handler, idempotency=MemoryIdempotencyStore(), trusted_proxies=()
    )
    include_routes(app, handlers)  # type: ignore[arg-type]
    return app


async def _ready() -> bool:
    return True
