"""The results consumer's handling of one result: a result it cannot apply is dead-lettered after
a few attempts (the ones behind it move on); the database being away is waited out, and a result
failing for too long makes the consumer report itself stuck (what /healthz answers)."""

from __future__ import annotations

import asyncio

from pymongo.errors import AutoReconnect

from ipn_gateway.adapters.memory import MemoryDeadLetters
from ipn_gateway.entrypoints.results import ResultsConsumer
from shared.messaging import CommandResult

RESULT = CommandResult(
    command_id="c1",
    type="lock",
    transaction_type="withdrawal_lock",
    reference_id="withdrawal:wd_1",
    user_id="alice",
    status="applied",
)


def consumer(
    dispatch: object, letters: MemoryDeadLetters, stuck_after: float = 60
) -> ResultsConsumer:
    return ResultsConsumer(
        "127.0.0.1:1",
        dispatch,  # type: ignore[arg-type]
        topic="wallet.results",
        group_id="test",
        dead_letters=letters,
        max_attempts=3,
        retry_delay_seconds=0.01,
        stuck_after_seconds=stuck_after,
    )


async def test_a_result_that_cannot_be_applied_is_dead_lettered_not_retried_forever() -> None:
    calls = 0

    async def poison(result: CommandResult) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("no such withdrawal state")

    letters = MemoryDeadLetters()
    results = consumer(poison, letters)
    async with asyncio.timeout(5):
        await results.apply(RESULT, b'{"raw": 1}')
    assert calls == 3
    [(raw, reason, _)] = letters.letters
    assert (raw, reason) == (b'{"raw": 1}', "ValueError: no such withdrawal state")
    assert results.dead_lettered == 1
    assert not results.stuck


async def test_the_database_away_is_waited_out_and_reported_as_stuck() -> None:
    database_up = asyncio.Event()

    async def needs_the_database(result: CommandResult) -> None:
        if not database_up.is_set():
            raise AutoReconnect("connection refused")

    letters = MemoryDeadLetters()
    results = consumer(needs_the_database, letters, stuck_after=0.05)
    applying = asyncio.create_task(results.apply(RESULT, b"{}"))
    await asyncio.sleep(0.2)  # far more than max_attempts retries
    assert not applying.done()
    assert results.stuck
    assert letters.letters == []  # never dead-lettered for an outage
    database_up.set()
    async with asyncio.timeout(5):
        await applying
    assert not results.stuck
