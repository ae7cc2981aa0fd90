"""The gateway's results consumer: the shared one (dead letters, outages waited out, the stuck
signal: shared/tests/test_results_consumer.py) reading only the gateway's own results and
keeping the ones it cannot apply in the gateway's dead letters."""

from __future__ import annotations

import asyncio

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


async def test_reads_its_own_results_and_dead_letters_what_it_cannot_apply() -> None:
    async def poison(result: CommandResult) -> None:
        raise ValueError("no such withdrawal state")

    letters = MemoryDeadLetters()
    results = ResultsConsumer(
        "127.0.0.1:1",
        poison,
        topic="wallet.results",
        group_id="test",
        dead_letters=letters,
        max_attempts=2,
        retry_delay_seconds=0.01,
    )
    deposit = RESULT.model_copy(update={"reference_id": "nowpayments:np_1"})
    other = RESULT.model_copy(update={"reference_id": "p2p:trade_1:escrow"})
    assert results._read(RESULT.model_dump_json().encode()) == RESULT
    assert results._read(deposit.model_dump_json().encode()) == deposit
    assert results._read(other.model_dump_json().encode()) is None

    async with asyncio.timeout(5):
        await results.apply(RESULT, b'{"raw": 1}')
    [(raw, reason, _)] = letters.letters
    assert (raw, reason) == (b'{"raw": 1}', "ValueError: no such withdrawal state")
    assert results.dead_lettered == 1


def test_an_unrecorded_refusal_is_no_answer_for_a_withdrawal_nor_for_a_deposit() -> None:
    """A withdrawal waiting on the wallet and a deposit's credit are both asked again: a
    `processing_failed` answer (recorded nowhere, the same command may still apply) leaves them
    waiting. Before, the deposit's was recorded as its credit's refusal, and nothing sent the
    credit again. A final refusal still reaches them."""

    async def dispatch(result: CommandResult) -> None:
        return None

    results = ResultsConsumer("127.0.0.1:1", dispatch, topic="wallet.results", group_id="test")
    unrecorded = RESULT.model_copy(update={"status": "rejected", "reason": "processing_failed"})
    deposit = unrecorded.model_copy(update={"reference_id": "nowpayments:np_1", "type": "credit"})
    assert results._read(unrecorded.model_dump_json().encode()) is None
    assert results._read(deposit.model_dump_json().encode()) is None
    refused = deposit.model_copy(update={"reason": "unknown_currency"})
    assert results._read(refused.model_dump_json().encode()) == refused
