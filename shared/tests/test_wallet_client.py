"""WalletClient against the embedded broker, with no wallet behind it: what the caller sees."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from shared.messaging import CommandResult
from shared.messaging.topics import PRODUCER_HEADER, Topics
from shared.wallet_client import WalletClient, WalletTimeout

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


async def _next_command(bootstrap: str, topics: Topics) -> ConsumerRecord[bytes, bytes]:
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
                        if json.loads(record.value or b"{}").get("reference_id") == "dep-old":
                            return record
    finally:
        await consumer.stop()
