"""The shared consumer's handling of one message: without dead letters a failing result is
retried until it goes through (nothing is skipped) and reports the consumer stuck meanwhile;
`wanted` picks the service's own results and unreadable messages are skipped.
(Dead-lettering with dead letters: services/ipn-gateway/tests/unit/test_results_consumer.py.)"""

from __future__ import annotations

import asyncio

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


def consumer(dispatch: object, stuck_after: float = 60) -> WalletResultsConsumer:
    return WalletResultsConsumer(
        "127.0.0.1:1",
        dispatch,  # type: ignore[arg-type]
        lambda result: result.reference_id.startswith("p2p:"),
        topic="wallet.results",
        group_id="test",
        max_attempts=2,
        retry_delay_seconds=0.01,
        stuck_after_seconds=stuck_after,
    )


async def test_without_dead_letters_a_failing_result_is_retried_until_it_goes_through() -> None:
    calls = 0

    async def fails_for_a_while(result: CommandResult) -> None:
        nonlocal calls
        calls += 1
        if calls < 10:
            raise ValueError("not yet")

    results = consumer(fails_for_a_while, stuck_after=0.02)
    applying = asyncio.create_task(results.apply(RESULT, b"{}"))
    await asyncio.sleep(0.05)
    assert results.stuck
    async with asyncio.timeout(5):
        await applying
    assert calls == 10  # far more than max_attempts: nothing was given up
    assert results.dead_lettered == 0
    assert not results.stuck


def test_only_wanted_and_readable_results_are_handled() -> None:
    results = consumer(None)
    theirs = RESULT.model_copy(update={"reference_id": "withdrawal:wd_1"})
    assert results._read(RESULT.model_dump_json().encode()) == RESULT
    assert results._read(theirs.model_dump_json().encode()) is None
    assert results._read(b"not json") is None
    assert results._read(None) is None
