"""WalletClient against the embedded broker, with no wallet behind it: what the caller sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import ValidationError
from structlog.testing import capture_logs

from shared.messaging import CommandResult, CreditCommand, LockCommand
from shared.messaging.outcomes import UNRECORDED_REFUSAL
from shared.messaging.topics import PRODUCER_HEADER, Topics
from shared.wallet_client import (
    UNRECORDED_REFUSAL_TRIES,
    WalletClient,
    WalletCommandPublisher,
    WalletTimeout,
    send_until_final,
)

pytestmark = pytest.mark.integration


async def test_no_result_in_time_is_a_timeout_and_fire_and_forget_returns_at_once(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> None:
    async with WalletClient(kafka_bootstrap_servers, topics=kafka_topics, timeout=0.5) as wallet:
        with pytest.raises(WalletTimeout, match="lock trade_1"):
            await wallet.lock_balance(
                user_id="seller",
                currency="BTC",
                amount="0.05",
                lock_type="p2p_escrow",
                reference_id="trade_1",
            )
        sent = await wallet.transfer(
            from_user="seller",
            to_user="buyer",
            currency="BTC",
            amount=Decimal("0.01"),
            transfer_type="p2p_payment",
            reference_id="trade_1",
            wait=False,
        )
        assert sent is None

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(kafka_topics.commands) or set()
        assigned = [TopicPartition(kafka_topics.commands, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        batches = await consumer.getmany(timeout_ms=2000)
        records = [r for batch in batches.values() for r in batch]
    finally:
        await consumer.stop()
    # Both commands are on the topic, keyed by the payer, so they share a partition and its order.
    assert [(r.key, json.loads(r.value)["type"]) for r in records] == [
        (b"seller", "lock"),
        (b"seller", "transfer"),
    ]
    assert json.loads(records[1].value)["amount"] == "0.01"


async def test_a_result_timeout_of_zero_does_not_wait_the_default(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> None:
    """0 means "publish, do not wait" (P2P_ACTION_WAIT_SECONDS=0), not the client's default."""
    async with WalletClient(kafka_bootstrap_servers, topics=kafka_topics, timeout=30) as wallet:
        command = CreditCommand(
            user_id="u-zero",
            currency="BTC",
            amount="0.1",
            transaction_type="deposit_nowpayments",
            reference_id="dep-zero",
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(WalletTimeout, match="within 0s"):
            await asyncio.wait_for(wallet.send(command, result_timeout=0), 10)
        answer = await asyncio.wait_for(
            WalletCommandPublisher(wallet).publish_and_wait(command, 0), 10
        )
        assert answer is None
        assert loop.time() - started < 10


async def test_amounts_are_validated_before_anything_is_sent(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> None:
    async with WalletClient(kafka_bootstrap_servers, topics=kafka_topics) as wallet:
        with pytest.raises(ValidationError, match="amount_not_a_string"):
            await wallet.credit(
                user_id="u",
                currency="BTC",
                amount=0.1,  # type: ignore[arg-type]  # floats are refused at run time too
                transaction_type="deposit_nowpayments",
                reference_id="r",
            )
        with pytest.raises(ValidationError, match="amount_too_precise"):
            await wallet.debit(
                user_id="u",
                currency="GBP",
                amount="1.001",
                transaction_type="withdrawal",
                reference_id="r",
            )


async def test_results_naming_another_producer_are_skipped_and_unnamed_ones_still_arrive(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> None:
    """No wallet here: the test answers in its place, once as another producer's result would
    look (skipped before decoding) and once as a wallet from before the header answers."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    async with WalletClient(
        kafka_bootstrap_servers, topics=kafka_topics, timeout=20, producer="gateway"
    ) as wallet:
        waiting = asyncio.create_task(
            wallet.credit(
                user_id="u-old",
                currency="BTC",
                amount="0.2",
                transaction_type="deposit_nowpayments",
                reference_id="dep-old",
            )
        )
        command = await _next_command(kafka_bootstrap_servers, kafka_topics)
        assert (PRODUCER_HEADER, b"gateway") in command.headers
        command_id = json.loads(command.value or b"{}")["command_id"]

        def result(status: str) -> bytes:
            return (
                CommandResult(
                    command_id=command_id,
                    type="credit",
                    transaction_type="deposit_nowpayments",
                    reference_id="dep-old",
                    user_id="u-old",
                    status=status,
                )
                .model_dump_json()
                .encode()
            )

        # Another producer's result for the same command_id: never decoded, never taken.
        await producer.send_and_wait(
            kafka_topics.results,
            result("rejected"),
            key=b"u-old",
            headers=[(PRODUCER_HEADER, b"p2p")],
        )
        await asyncio.sleep(1)
        assert not waiting.done()
        assert wallet.results_decoded == 0
        # A result without the header, as a wallet from before it publishes: matched by command_id.
        await producer.send_and_wait(kafka_topics.results, result("applied"), key=b"u-old")
        answered = await waiting
    await producer.stop()
    assert answered is not None
    assert answered.status == "applied"
    assert wallet.results_decoded == 1


async def _next_command(
    bootstrap: str, topics: Topics, reference_id: str = "dep-old"
) -> ConsumerRecord[bytes, bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topics.commands) or set()
        assigned = [TopicPartition(topics.commands, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        async with asyncio.timeout(20):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if json.loads(record.value or b"{}").get("reference_id") == reference_id:
                            return record
    finally:
        await consumer.stop()


def _result_for(command: ConsumerRecord[bytes, bytes], status: str = "applied") -> bytes:
    sent = json.loads(command.value or b"{}")
    return (
        CommandResult(
            command_id=sent["command_id"],
            type=sent["type"],
            transaction_type=sent["transaction_type"],
            reference_id=sent["reference_id"],
            user_id=sent["user_id"],
            status=status,
        )
        .model_dump_json()
        .encode()
    )


async def test_the_same_command_sent_twice_at_once_answers_both_callers(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> None:
    """A retry of a command while its first send still waits: one result answers both, and the
    first caller leaving (its own shorter timeout) does not take the result from the second."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    command = CreditCommand(
        user_id="u-twice",
        currency="BTC",
        amount="0.3",
        transaction_type="deposit_nowpayments",
        reference_id="dep-twice",
    )
    async with WalletClient(
        kafka_bootstrap_servers, topics=kafka_topics, timeout=20, producer="gateway"
    ) as wallet:
        impatient = asyncio.create_task(wallet.send(command, result_timeout=1))
        first = asyncio.create_task(wallet.send(command))
        second = asyncio.create_task(wallet.send(command))
        sent = await _next_command(kafka_bootstrap_servers, kafka_topics, "dep-twice")
        with pytest.raises(WalletTimeout):
            await impatient
        await producer.send_and_wait(kafka_topics.results, _result_for(sent), key=b"u-twice")
        answers = await asyncio.wait_for(asyncio.gather(first, second), 20)
    await producer.stop()
    assert [a.status if a else None for a in answers] == ["applied", "applied"]
    assert {a.command_id if a else None for a in answers} == {command.command_id}


async def test_the_results_listener_goes_on_after_a_failure(
    kafka_bootstrap_servers: str, kafka_topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while reading results (here the first result read raises) is logged and the
    listener reads on: a later command still gets its answer instead of every wait timing out."""
    decode = CommandResult.model_validate_json
    failures = []

    def failing_once(data: bytes) -> CommandResult:
        if not failures:
            failures.append(data)
            raise RuntimeError("the broker connection broke")
        return decode(data)

    monkeypatch.setattr(WalletClient, "listener_retry_seconds", 0.1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    async with WalletClient(
        kafka_bootstrap_servers, topics=kafka_topics, timeout=20, producer="gateway"
    ) as wallet:
        monkeypatch.setattr(
            "shared.wallet_client.CommandResult",
            type("FailingOnce", (), {"model_validate_json": staticmethod(failing_once)}),
        )
        waiting = asyncio.create_task(
            wallet.credit(
                user_id="u-listener",
                currency="BTC",
                amount="0.2",
                transaction_type="deposit_nowpayments",
                reference_id="dep-listener",
            )
        )
        sent = await _next_command(kafka_bootstrap_servers, kafka_topics, "dep-listener")
        await producer.send_and_wait(kafka_topics.results, _result_for(sent), key=b"u-listener")
        await asyncio.sleep(1)
        assert len(failures) == 1
        assert not waiting.done()
        # The wallet answers a resend of the command with its result again: now it arrives.
        await producer.send_and_wait(kafka_topics.results, _result_for(sent), key=b"u-listener")
        answered = await asyncio.wait_for(waiting, 20)
    await producer.stop()
    assert answered is not None
    assert answered.status == "applied"


@pytest.mark.parametrize("name", ["", "p2p service", "p2p\n", "p" * 129, "prodücer"])
def test_a_producer_name_the_wallet_would_not_copy_back_is_refused(name: str) -> None:
    # The wallet drops such a header from the result: the client would wait for it in vain. An
    # empty name means "pick one", as None does.
    if not name:
        assert WalletClient("localhost:9092", producer=name).producer.startswith("wallet-client-")
        return
    with pytest.raises(ValueError, match="printable ASCII"):
        WalletClient("localhost:9092", producer=name)
    assert WalletClient("localhost:9092", producer="p" * 128).producer == "p" * 128


async def test_a_refusal_the_wallet_did_not_record_is_no_answer_to_publish_and_wait(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> None:
    """`publish_and_wait` (the gateway's withdrawals, p2p's trades: both ask again) takes it as
    no answer yet, at once, not as a refusal it would act on; `send` hands it over as it is, for
    callers that record it (a day's interest)."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()

    async def answered(reference: str, send: Callable[[LockCommand], Awaitable[Any]]) -> Any:
        command = LockCommand(
            user_id="seller",
            currency="BTC",
            amount="0.05",
            transaction_type="p2p_escrow",
            reference_id=reference,
        )
        waiting = asyncio.create_task(send(command))
        sent = await _next_command(kafka_bootstrap_servers, kafka_topics, reference)
        unrecorded = json.loads(_result_for(sent, "rejected"))
        unrecorded.update(reason="processing_failed", detail="OperationFailure: LockTimeout")
        await producer.send_and_wait(
            kafka_topics.results, json.dumps(unrecorded).encode(), key=b"seller"
        )
        async with asyncio.timeout(10):  # not the client's 30 s
            return await waiting

    try:
        async with WalletClient(kafka_bootstrap_servers, topics=kafka_topics, timeout=30) as wallet:
            publisher = WalletCommandPublisher(wallet)
            with capture_logs() as logs:
                assert (
                    await answered("trade_9", lambda c: publisher.publish_and_wait(c, 30)) is None
                )
            assert [e["event"] for e in logs] == ["wallet_client.result_not_final"]
            result = await answered("trade_10", wallet.send)
            assert (result.status, result.reason, result.final) == (
                "rejected",
                "processing_failed",
                False,
            )
    finally:
        await producer.stop()


def _answer(status: str, reason: str | None = None) -> CommandResult:
    return CommandResult(
        command_id="c1",
        type="credit",
        transaction_type="savings_interest",
        reference_id="interest:USDT:2026-11-29:amy",
        user_id="amy",
        status=status,  # type: ignore[arg-type]
        reason=reason,
    )


async def test_a_command_is_sent_again_while_the_wallet_answers_it_not_final() -> None:
    """Until a final answer (applied, or a refusal the wallet recorded), at most
    UNRECORDED_REFUSAL_TRIES sends; the last answer is returned whatever it is."""
    failed = _answer("rejected", UNRECORDED_REFUSAL)

    def sender(*answers: CommandResult | None) -> tuple[list[int], Any]:
        sent: list[int] = []

        async def send() -> CommandResult | None:
            sent.append(1)
            return answers[len(sent) - 1]

        return sent, send

    applied, refused = _answer("applied"), _answer("rejected", "insufficient_funds")
    for answers, sends in (
        ((applied,), 1),
        ((refused,), 1),
        ((None,), 1),  # sent without waiting: nothing to judge
        ((failed, applied), 2),
        ((failed,) * UNRECORDED_REFUSAL_TRIES, UNRECORDED_REFUSAL_TRIES),
    ):
        sent, send = sender(*answers)
        with capture_logs() as logs:
            answer = await send_until_final(send, event="x.not_final", pause=0)
        assert (answer, len(sent)) == (answers[-1], sends)
        # each send again is logged, with the try whose answer was not final
        assert [e["attempt"] for e in logs if e["event"] == "x.not_final"] == list(range(1, sends))
