"""Pipeline throughput: commands in through Kafka, the real wallet process, results out.

One run: fresh topics under a prefix of its own, `python -m wallet` started with `WALLET_STORE=memory`
and the batch size under test, every command published as fast as the producer batches them, and
the run ends when the result of the last command is on `wallet.results`. Latency is per command,
from the moment it was handed to the producer to the Kafka timestamp of its result (stamped by the
wallet's producer when it publishes), both on this machine's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.workload import Workload
from shared.infra import ManagedProcess, ensure_topics, free_port, wait_until
from shared.messaging.topics import Topics


@dataclass(slots=True)
class PipelineRun:
    batch_size: int
    commands: int
    seconds: float  # first command sent → last result published
    send_seconds: float  # how long handing every command to the producer took
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def per_s(self) -> float:
        return self.commands / self.seconds


@dataclass(frozen=True, slots=True)
class WalletProcess:
    """How to start the wallet: the command line (e.g. under a profiler) and environment to add."""

    argv: tuple[str, ...] = (sys.executable, "-m", "wallet")
    log_dir: Path | None = None
    extra_env: tuple[tuple[str, str], ...] = ()
    pid_file: Path | None = None  # where to write the wallet's pid, e.g. to attach a profiler


async def start_wallet(
    bootstrap: str, topics: Topics, batch_size: int, how: WalletProcess, within: float = 60.0
) -> ManagedProcess:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "WALLET_STORE": "memory",
        "WALLET_HTTP_PORT": str(port),
        "WALLET_BATCH_MAX_RECORDS": str(batch_size),
        # A fresh group joins in about the session timeout: keep it short, the run is short.
        "WALLET_CONSUMER_SESSION_TIMEOUT_MS": "3000",
        "WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
        "LOG_LEVEL": "WARNING",
        **dict(how.extra_env),
    }
    log_path = how.log_dir / f"wallet-{topics.prefix.strip('.')}.log" if how.log_dir else None
    process = await start_service("wallet", how.argv, env, port, log_path, within)
    if how.pid_file is not None:
        how.pid_file.write_text(str(process.pid))
    return process


async def start_service(
    name: str, argv: Sequence[str], env: dict[str, str], port: int, log: Path | None, within: float
) -> ManagedProcess:
    """Start a service process and wait until its /healthz answers 200."""
    process = ManagedProcess(name, argv, env=env, log_path=log)

    async def healthy() -> bool:
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz")
            return response.status_code == 200

    try:
        await wait_until(
            name,
            healthy,
            within=within,
            still_running=lambda: process.poll() is None,
            diagnostics=process.log_tail,
        )
    except BaseException:
        process.stop()
        raise
    return process


async def delete_topics(bootstrap: str, topics: Topics) -> None:
    """Free the broker's memory between runs; a broker that refuses is left as it is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    with contextlib.suppress(Exception):
        await admin.start()
        await admin.delete_topics(list(topics.all))
    with contextlib.suppress(Exception):
        await admin.close()


async def _results_reader(bootstrap: str, topic: str, partitions: set[int]) -> AIOKafkaConsumer:
    # No consumer group: assign every partition and read from the start (the topics are new).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    return consumer


async def run_pipeline(
    bootstrap: str,
    workload: Workload,
    batch_size: int,
    *,
    how: WalletProcess | None = None,
    results_within: float = 300.0,
) -> PipelineRun:
    """One run of the whole pipeline on fresh topics; raises if a result never comes."""
    topics = Topics(prefix=f"bench.{uuid.uuid4().hex[:8]}.b{batch_size}.")
    await ensure_topics(bootstrap, topics.all)
    wallet = await start_wallet(bootstrap, topics, batch_size, how or WalletProcess())
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    partitions = await producer.partitions_for(topics.results)
    consumer = await _results_reader(bootstrap, topics.results, partitions)
    try:
        return await _drive(producer, consumer, topics, workload, batch_size, results_within)
    finally:
        await producer.stop()
        await consumer.stop()
        wallet.stop()
        await delete_topics(bootstrap, topics)


async def _drive(
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    topics: Topics,
    workload: Workload,
    batch_size: int,
    results_within: float,
) -> PipelineRun:
    issued: dict[str, float] = {}
    run = PipelineRun(batch_size, len(workload), 0.0, 0.0)
    first_sent = time.time()
    deliveries = []
    for index, command in enumerate(workload.commands):
        now = time.time()
        issued[command["command_id"]] = now
        # send() only enqueues: the producer batches per partition while this loop goes on.
        deliveries.append(
            await producer.send(
                topics.commands, workload.encoded(index), key=command["user_id"].encode()
            )
        )
    run.send_seconds = time.time() - first_sent
    await asyncio.gather(*deliveries)

    seen: set[str] = set()
    last_published = first_sent
    deadline = time.monotonic() + results_within
    while len(seen) < len(issued):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(issued) - len(seen)} results missing after {results_within:.0f}s"
            )
        batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
        for records in batches.values():
            for record in records:
                result = json.loads(record.value)
                command_id = result["command_id"]
                if command_id not in issued or command_id in seen:
                    continue
                seen.add(command_id)
                published = record.timestamp / 1000
                run.latencies_ms.append(max(0.0, published - issued[command_id]) * 1000)
                run.statuses[result["status"]] += 1
                last_published = max(last_published, published)
    run.seconds = last_published - first_sent
    return run
