"""Over the embedded broker: each producer reads only its own results, and readiness follows the
partitions the wallet's consumer holds."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.infra import ensure_topics
from shared.messaging import CreditCommand, encode
from shared.messaging.topics import PRODUCER_HEADER, Topics
from shared.wallet_client import WalletClient
from wallet.bootstrap import WalletRuntime, build_http_app, build_runtime

from .conftest import started, wallet_settings

pytestmark = pytest.mark.integration

PRODUCERS = ("ipn-gateway", "p2p", "trading", "savings")
PER_PRODUCER = 20


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def memory_wallet(
    kafka_bootstrap_servers: str, kafka_topics: Topics
) -> AsyncIterator[WalletRuntime]:
    runtime = build_runtime(
        wallet_settings(kafka_bootstrap_servers, kafka_topics, WALLET_STORE="memory")
    )
    await started(runtime)
    try:
        yield runtime
    finally:
        await runtime.stop()


async def _results_on_topic(bootstrap: str, topic: str, expected: int) -> list[tuple[str, bytes]]:
    """(command_id from the correlation header, producer header or b"") of every result."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[tuple[str, bytes]] = []
        async with asyncio.timeout(30):
            while len(found) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        headers = dict(record.headers)
                        found.append(
                            (headers["correlation_id"].decode(), headers.get(PRODUCER_HEADER, b""))
                        )
        return found
    finally:
        await consumer.stop()


async def test_four_producers_each_decode_only_their_own_results(
    kafka_bootstrap_servers: str, kafka_topics: Topics, memory_wallet: WalletRuntime
) -> None:
    clients = [
        WalletClient(kafka_bootstrap_servers, topics=kafka_topics, timeout=30, producer=name)
        for name in PRODUCERS
    ]
    for client in clients:
        await client.start()
    try:

        async def share(client: WalletClient) -> list[str]:
            results = await asyncio.gather(
                *(
                    client.credit(
                        user_id=f"{client.producer}-user-{n % 3}",
                        currency="BTC",
                        amount="0.001",
                        transaction_type="deposit_nowpayments",
                        reference_id=f"{client.producer}-deposit-{n}",
                    )
                    for n in range(PER_PRODUCER)
                )
            )
            return [r.command_id for r in results if r is not None and r.status == "applied"]

        applied = await asyncio.gather(*(share(c) for c in clients))
    finally:
        for client in clients:
            await client.stop()

    assert [len(ids) for ids in applied] == [PER_PRODUCER] * len(PRODUCERS)
    # Each client decoded exactly the results of its own commands, none of the other 60.
    assert [c.results_decoded for c in clients] == [PER_PRODUCER] * len(PRODUCERS)
    # On the wire, every result names the producer of its command.
    sender = {
        command_id: name for name, ids in zip(PRODUCERS, applied, strict=True) for command_id in ids
    }
    on_topic = await _results_on_topic(
        kafka_bootstrap_servers, kafka_topics.results, PER_PRODUCER * len(PRODUCERS)
    )
    assert Counter(producer.decode() for _, producer in on_topic) == dict.fromkeys(
        PRODUCERS, PER_PRODUCER
    )
    assert all(sender[command_id] == producer.decode() for command_id, producer in on_topic)


async def test_a_command_without_the_header_gets_a_result_without_it(
    kafka_bootstrap_servers: str, kafka_topics: Topics, memory_wallet: WalletRuntime
) -> None:
    command = CreditCommand(
        user_id="old-producer-user",
        currency="BTC",
        amount="0.5",
        transaction_type="deposit_nowpayments",
        reference_id=f"old-{uuid.uuid4().hex}",
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            kafka_topics.commands, encode(command), key=b"old-producer-user"
        )
    finally:
        await producer.stop()
    # The previous test left its 80 results on the topic, all with a producer header.
    on_topic = dict(
        await _results_on_topic(
            kafka_bootstrap_servers, kafka_topics.results, PER_PRODUCER * len(PRODUCERS) + 1
        )
    )
    assert on_topic[command.command_id] == b""


async def _status(http: httpx.AsyncClient) -> int:
    return (await http.get("/healthz")).status_code


async def _until(http: httpx.AsyncClient, status: int, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while await _status(http) != status:
            await asyncio.sleep(0.1)


async def test_healthz_is_503_while_a_revocation_leaves_the_consumer_no_partition(
    kafka_bootstrap_servers: str,
) -> None:
    # One partition of commands: another member of the group can take the wallet's only one.
    topics = Topics(prefix=f"routing_health.{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka_bootstrap_servers, [topics.commands], partitions=1)
    await ensure_topics(kafka_bootstrap_servers, topics.all)
    runtime = await started(
        build_runtime(wallet_settings(kafka_bootstrap_servers, topics, WALLET_STORE="memory"))
    )
    transport = httpx.ASGITransport(app=build_http_app(runtime))
    # Sorted before the wallet's member id, so the round-robin assignment gives it the partition.
    intruder = AIOKafkaConsumer(
        topics.commands,
        bootstrap_servers=kafka_bootstrap_servers,
        group_id=topics.prefix + "wallet",
        client_id="aaa-intruder",
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        enable_auto_commit=False,
    )
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://wallet") as http:
            assert await _status(http) == 200
            await intruder.start()
            poll = asyncio.create_task(intruder.getmany(timeout_ms=20_000))
            await _until(http, 503)
            assert not runtime.tracker.partitions
            assert intruder.assignment() == {TopicPartition(topics.commands, 0)}
            poll.cancel()
            await intruder.stop()  # leaves the group: the partition comes back to the wallet
            await _until(http, 200)
            assert runtime.tracker.partitions == {TopicPartition(topics.commands, 0)}
    finally:
        await intruder.stop()
        await runtime.stop()
