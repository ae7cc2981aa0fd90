"""Test doubles of the gateway's tests: a tiny wallet that answers commands like the real one.

It stands in for the wallet service in these tests only: available/locked balances per user and
currency, idempotency by (type, transaction_type, reference_id), and a `CommandResult` for every
command. Over Kafka it reads `wallet.commands` and answers on `wallet.results`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.messaging import (
    BalanceSnapshot,
    CommandResult,
    CreditCommand,
    InvalidCommand,
    LockCommand,
    ReleaseLockedCommand,
    UnlockCommand,
    WalletCommand,
    encode,
    parse_command,
)
from shared.messaging.outcomes import UNRECORDED_REFUSAL
from shared.messaging.topics import Topics


@dataclass
class FakeWallet:
    available: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    locked: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    outcomes: dict[tuple[str, str, str], tuple[str, CommandResult]] = field(default_factory=dict)
    commands: list[WalletCommand] = field(default_factory=list)
    # References whose next command the wallet fails on (a bug, a database error it cannot
    # class): answered `rejected / processing_failed`, recorded nowhere, as the real wallet does.
    fail_next: set[str] = field(default_factory=set)

    def fund(self, user: str, currency: str, amount: str) -> None:
        key = (user, currency)
        self.available[key] = self.available.get(key, Decimal(0)) + Decimal(amount)

    def balance(self, user: str, currency: str) -> tuple[Decimal, Decimal]:
        key = (user, currency)
        return self.available.get(key, Decimal(0)), self.locked.get(key, Decimal(0))

    def apply(self, command: WalletCommand) -> CommandResult:
        self.commands.append(command)
        if command.reference_id in self.fail_next:
            self.fail_next.discard(command.reference_id)
            return self._result(command, "rejected", UNRECORDED_REFUSAL)
        key = command.idempotency_key
        if key in self.outcomes:
            fingerprint, first = self.outcomes[key]
            if fingerprint != command.fingerprint():
                return self._result(command, "rejected", "idempotency_conflict")
            repeat = {"command_id": command.command_id, "status": "duplicate"}
            return first.model_copy(update={**repeat, "original_status": first.status})
        reason = self._move(command)
        result = self._result(command, "rejected" if reason else "applied", reason)
        self.outcomes[key] = (command.fingerprint(), result)
        return result

    def _move(self, command: WalletCommand) -> str | None:
        key = (command.user_id, command.currency)
        available, locked = self.balance(*key)
        if isinstance(command, CreditCommand):
            self.available[key] = available + command.amount
        elif isinstance(command, LockCommand):
            if available < command.amount:
                return "insufficient_funds"
            self.available[key], self.locked[key] = (
                available - command.amount,
                locked + command.amount,
            )
        elif isinstance(command, UnlockCommand):
            if locked < command.amount:
                return "insufficient_locked_funds"
            self.available[key], self.locked[key] = (
                available + command.amount,
                locked - command.amount,
            )
        elif isinstance(command, ReleaseLockedCommand):
            if locked < command.amount:
                return "insufficient_locked_funds"
            self.locked[key] = locked - command.amount
        else:
            return "unsupported_by_fake"
        return None

    def _result(self, command: WalletCommand, status: str, reason: str | None) -> CommandResult:
        available, locked = self.balance(command.user_id, command.currency)
        snapshot = BalanceSnapshot(
            user_id=command.user_id,
            currency=command.currency,
            available_balance=available,
            locked_balance=locked,
            savings_balance=Decimal(0),
            total_balance=available + locked,
        )
        return CommandResult(
            command_id=command.command_id,
            type=command.type,
            transaction_type=command.transaction_type,
            reference_id=command.reference_id,
            user_id=command.user_id,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            balances=[snapshot],
        )


class KafkaFakeWallet:
    """The fake wallet behind Kafka: every command published from now on gets a result."""

    def __init__(self, bootstrap_servers: str, topics: Topics) -> None:
        self.wallet = FakeWallet()
        self._topics = topics
        self._bootstrap = bootstrap_servers
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False
        )
        await self._consumer.start()
        partitions = await self._producer.partitions_for(self._topics.commands)
        assigned = [TopicPartition(self._topics.commands, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for tp in assigned:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        assert self._producer is not None
        async for record in self._consumer:
            try:
                command = parse_command(record.value or b"")
            except InvalidCommand:
                continue
            result = self.wallet.apply(command)
            await self._producer.send_and_wait(self._topics.results, encode(result), key=record.key)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()


@pytest.fixture
def fake_wallet() -> FakeWallet:
    return FakeWallet()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def kafka_fake_wallet(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> AsyncIterator[KafkaFakeWallet]:
    wallet = KafkaFakeWallet(kafka_bootstrap_servers, kafka_topics)
    await wallet.start()
    try:
        yield wallet
    finally:
        await wallet.stop()
