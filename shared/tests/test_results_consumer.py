"""The shared consumer's handling of one result: with dead letters, a result it cannot apply is
dead-lettered after a few attempts (the ones behind it move on); the database being away is
waited out and never dead-lettered; without dead letters a failing result is retried until it
goes through; while one result keeps failing the consumer reports itself stuck (for /healthz).
`wanted` picks the service's own results and unreadable messages are skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from pymongo.errors import AutoReconnect
from structlog.testing import capture_logs

from shared.messaging import CommandResult
from shared.results_consumer import WalletResultsConsumer

RESULT = CommandResult(
    command_id="c1",
    type="lock",
    transaction_type="p2p_escrow",
    reference_id="p2p:trade_1:escrow",
    user_id="sam",
    status="applied",
)


class Letters:
    def __init__(self) -> None:
        self.kept: list[tuple[bytes, str]] = []

    async def add(self, raw: bytes, reason: str, now: datetime) -> None:
        self.kept.append((raw, reason))


def consumer(
    dispatch: object,
    letters: Letters | None = None,
    stuck_after: float = 60,
    asked_again: Callable[[CommandResult], bool] | None = None,
) -> WalletResultsConsumer:
    return WalletResultsConsumer(
        "127.0.0.1:1",
        dispatch,  # type: ignore[arg-type]
        lambda result: result.reference_id.startswith("p2p:"),
        asked_again=asked_again,
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
        raise ValueError("no such trade state")

    letters = Letters()
    results = consumer(poison, letters)
    async with asyncio.timeout(5):
        await results.apply(RESULT, b'{"raw": 1}')
    assert calls == 3
    assert letters.kept == [(b'{"raw": 1}', "ValueError: no such trade state")]
    assert results.dead_lettered == 1
    assert not results.stuck


async def test_the_database_away_is_waited_out_and_reported_as_stuck() -> None:
    database_up = asyncio.Event()

    async def needs_the_database(result: CommandResult) -> None:
        if not database_up.is_set():
            raise AutoReconnect("connection refused")

    letters = Letters()
    results = consumer(needs_the_database, letters, stuck_after=0.05)
    applying = asyncio.create_task(results.apply(RESULT, b"{}"))
    await asyncio.sleep(0.2)  # far more than max_attempts retries
    assert not applying.done()
    assert results.stuck
    assert letters.kept == []  # never dead-lettered for an outage
    database_up.set()
    async with asyncio.timeout(5):
        await applying
    assert not results.stuck


async def test_without_dead_letters_a_failing_result_is_retried_until_it_goes_through() -> None:
    calls = 0

    async def fails_for_a_while(result: CommandResult) -> None:
        nonlocal calls
        calls += 1
        if calls < 10:
            raise ValueError("not yet")

    results = consumer(fails_for_a_while)
    async with asyncio.timeout(5):
        await results.apply(RESULT, b"{}")
    assert calls == 10  # far more than max_attempts: nothing was given up
    assert results.dead_lettered == 0


def test_only_wanted_and_readable_results_are_handled() -> None:
    results = consumer(None)
    theirs = RESULT.model_copy(update={"reference_id": "withdrawal:wd_1"})
    assert results._read(RESULT.model_dump_json().encode()) == RESULT
    assert results._read(theirs.model_dump_json().encode()) is None
    assert results._read(b"not json") is None
    assert results._read(None) is None


def test_a_refusal_the_wallet_did_not_record_is_no_answer() -> None:
    """`processing_failed`: the wallet failed on the command and stored no outcome, so the same
    command sent again may still be applied. Taken as a refusal, it set records to failed that a
    later `applied` then could not move (a hold locked for good, a swap shown failed though done);
    skipped, the record stays as it is and the service asks again."""
    results = consumer(None, asked_again=lambda result: result.type == "lock")
    unrecorded = RESULT.model_copy(
        update={"status": "rejected", "reason": "processing_failed", "detail": "LockTimeout"}
    )
    refused = RESULT.model_copy(update={"status": "rejected", "reason": "insufficient_funds"})
    assert (unrecorded.final, refused.final, RESULT.final) == (False, True, True)
    with capture_logs() as logs:
        assert results._read(unrecorded.model_dump_json().encode()) is None
    assert [(e["event"], e["reason"]) for e in logs] == [("results.not_final", "processing_failed")]
    assert results._read(refused.model_dump_json().encode()) == refused
    # A duplicate's first outcome was recorded, whatever it was.
    duplicate = RESULT.model_copy(update={"status": "duplicate", "original_status": "rejected"})
    assert duplicate.final
    assert results._read(duplicate.model_dump_json().encode()) == duplicate
    # Where nothing asks again (a deposit's credit, a day's interest), the refusal is handed over
    # as it says, to be recorded where a person sees it.
    unlock = unrecorded.model_copy(update={"type": "unlock"})
    assert results._read(unlock.model_dump_json().encode()) == unlock
    assert consumer(None)._read(unrecorded.model_dump_json().encode()) == unrecorded
