"""The embedded Kafka and MongoDB: lifecycle, topics, a consumer group, exact decimals."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from bson import Decimal128
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pymongo.asynchronous.database import AsyncDatabase

from shared.infra import (
    EmbeddedKafka,
    Infrastructure,
    ManagedProcess,
    StartupError,
    ensure_topics,
    kafka_ready,
    mongo_ready,
    pid_alive,
    topic_partitions,
    wait_until_gone,
)
from shared.infra.net import free_port
from shared.messaging.topics import ALL_TOPICS, DEFAULT_PARTITIONS, WALLET_COMMANDS, Topics
from shared.testing.fixtures import unique_database_name


@pytest.mark.integration
async def test_embedded_servers_start_answer_and_leave_no_process(tmp_path: Path) -> None:
    infra = Infrastructure(log_dir=tmp_path)
    async with infra:
        assert infra.kafka.origin == infra.mongodb.origin == "embedded"
        pids = infra.pids
        assert len(pids) == 2
        assert all(pid_alive(pid) for pid in pids)
        assert await kafka_ready(infra.kafka_bootstrap_servers)
        assert await mongo_ready(infra.mongodb_url)
        kafka_address = infra.kafka_bootstrap_servers
        mongodb_url = infra.mongodb_url
    assert wait_until_gone(pids, timeout=1.0) == []
    with pytest.raises(RuntimeError):
        _ = infra.kafka_bootstrap_servers
    assert not await _answers(kafka_ready, kafka_address)
    assert not await _answers(mongo_ready, mongodb_url)


async def _answers(probe: Any, address: str) -> bool:
    try:
        return bool(await probe(address))
    except Exception:
        return False


def test_sync_context_manager_uses_configured_addresses_and_starts_nothing(
    infrastructure: Infrastructure,
) -> None:
    # Run in a worker thread: the sync API refuses to run inside the test's event loop.
    def use_configured() -> tuple[str, str, list[int]]:
        with Infrastructure(
            kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
            mongodb_url=infrastructure.mongodb_url,
        ) as configured:
            assert configured.kafka.origin == "configured"
            return configured.kafka_bootstrap_servers, configured.mongodb_url, configured.pids

    with ThreadPoolExecutor(1) as pool:
        kafka, mongodb, pids = pool.submit(use_configured).result()
    assert (kafka, mongodb, pids) == (
        infrastructure.kafka_bootstrap_servers,
        infrastructure.mongodb_url,
        [],
    )
    # Leaving the configured one did not stop the shared servers.
    assert all(pid_alive(pid) for pid in infrastructure.pids)


async def test_every_contract_topic_exists_with_the_default_partition_count(
    kafka_bootstrap_servers: str,
) -> None:
    partitions = await topic_partitions(kafka_bootstrap_servers, ALL_TOPICS)
    assert partitions == dict.fromkeys(ALL_TOPICS, DEFAULT_PARTITIONS)


async def test_keyed_command_reaches_a_consumer_group(kafka_bootstrap_servers: str) -> None:
    received: asyncio.Queue[tuple[bytes | None, Any]] = asyncio.Queue()
    broker = KafkaBroker(kafka_bootstrap_servers)

    @broker.subscriber(
        WALLET_COMMANDS,
        group_id=unique_database_name("group"),
        batch=True,
        max_records=500,
        batch_timeout_ms=50,
        ack_policy=AckPolicy.ACK,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        auto_offset_reset="earliest",
    )
    async def handle(bodies: list[dict[str, str]], message: KafkaMessage) -> None:
        for record, body in zip(message.raw_message, bodies, strict=True):
            await received.put((record.key, body))

    reference_id = unique_database_name("ref")
    async with broker:
        await broker.start()
        await broker.publish(
            {"reference_id": reference_id, "amount": "0.01"}, WALLET_COMMANDS, key=b"user123"
        )
        key, body = await asyncio.wait_for(_first_match(received, reference_id), timeout=20)
    assert key == b"user123"
    assert body == {"reference_id": reference_id, "amount": "0.01"}


async def _first_match(
    queue: asyncio.Queue[tuple[bytes | None, Any]], reference_id: str
) -> tuple[bytes | None, Any]:
    # Other tests may share the topic: skip whatever is not ours.
    while True:
        key, body = await queue.get()
        if body.get("reference_id") == reference_id:
            return key, body


async def test_decimal128_round_trip_is_exact(
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    amounts = [Decimal("0.00000001"), Decimal("12345678901234567890.123456789012"), Decimal("-0.1")]
    collection = mongo_database["amounts"]
    await collection.insert_many(
        [{"_id": i, "amount": Decimal128(a)} for i, a in enumerate(amounts)]
    )
    await collection.update_one({"_id": 2}, {"$inc": {"amount": Decimal128("0.3")}})
    stored = [doc["amount"] async for doc in collection.find().sort("_id", 1)]
    assert all(isinstance(value, Decimal128) for value in stored)
    assert [value.to_decimal() for value in stored] == [amounts[0], amounts[1], Decimal("0.2")]


def test_unique_database_names_are_valid_and_distinct() -> None:
    names = {unique_database_name("tests.test_some module$x" * 5) for _ in range(50)}
    assert len(names) == 50
    assert all(len(n) <= 63 and not set(n) & set('/\\. "$') for n in names)


async def test_a_taken_port_is_reported_not_waited_for() -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(StartupError, match="already in use"):
            await EmbeddedKafka(port).start(within=5)


def test_stopping_a_managed_process_ends_its_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    proc = ManagedProcess("sleeper", [sys.executable, "-c", script])
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started its own child"
        time.sleep(0.02)
    grandchild = int(pid_file.read_text())
    assert pid_alive(proc.pid)
    assert pid_alive(grandchild)
    proc.stop(timeout=2)
    assert wait_until_gone([proc.pid, grandchild], timeout=2) == []


def test_topic_provisioning_command_is_idempotent(kafka_bootstrap_servers: str) -> None:
    command = [sys.executable, "-m", "shared.infra.kafka", "--within", "10"]
    for _ in range(2):  # the second run finds every topic already there
        done = subprocess.run(
            [*command, "--bootstrap-servers", kafka_bootstrap_servers],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "topics ready: wallet.commands" in done.stdout


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_children_die_with_their_parent(tmp_path: Path, sig: signal.Signals) -> None:
    pid_file = tmp_path / "children"
    script = (
        "import sys, time\n"
        "from shared.infra import ManagedProcess\n"
        "argv = [sys.executable, '-c', 'import time; time.sleep(120)']\n"
        "children = [ManagedProcess(f'sleeper{i}', argv) for i in range(2)]\n"
        f"open({str(pid_file)!r}, 'w').write(' '.join(str(c.pid) for c in children))\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the parent never started its children"
            time.sleep(0.02)
        children = [int(pid) for pid in pid_file.read_text().split()]
        assert all(pid_alive(pid) for pid in children)
        parent.send_signal(sig)
        assert parent.wait(timeout=10) == -sig
        assert wait_until_gone(children, timeout=5) == []
    finally:
        if parent.poll() is None:
            parent.kill()


async def test_wallet_events_is_created_to_be_kept_for_ever(kafka_bootstrap_servers: str) -> None:
    """Read models are built from its first offset: with Kafka's default retention a consumer
    group started after 7 days would miss the oldest movements."""
    topics = Topics(prefix=f"retention-{uuid.uuid4().hex[:8]}-")
    await ensure_topics(kafka_bootstrap_servers, topics.all)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in (topics.events, topics.results)]
        )
    finally:
        await admin.close()
    retention = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}.get("retention.ms")
        for response in described
        for resource in response.resources
    }
    assert retention[topics.events] == "-1"
    assert retention[topics.results] != "-1"  # the others keep the broker's default
