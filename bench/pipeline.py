"""Pipeline throughput: commands in through Kafka, the real wallet process(es), results out.

One run: fresh topics under a prefix of its own, `python -m wallet` started (one or more processes
in one consumer group, `WALLET_STORE=memory` or `mongo`, the batch size under test), every command
published as fast as the producer batches them, and the run ends when the result of the last
command is on `wallet.results`. Latency is per command, from the moment it was handed to the
producer to the Kafka timestamp of its result (stamped by the wallet's producer when it
publishes), both on this machine's clock.

Every run is checked against the workload's model: each command's own outcome, every user's final
balances (read back through the wallet's HTTP API), and the offsets the group committed. The same
runner drives the echo consumer (`bench.echo`), the ceiling the broker and the client allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench.workload import Balances, WalletKey, Workload
from shared.http import make_token
from shared.infra import ManagedProcess, ensure_topics, free_port, offsets_committed, wait_until
from shared.messaging.topics import Topics

JWT_SECRET = "bench-" + uuid.uuid4().hex
Consumer = Literal["wallet", "echo"]


@dataclass(slots=True)
class PipelineRun:
    batch_size: int
    commands: int
    seconds: float  # first command sent → last result published
    send_seconds: float  # how long handing every command to the producer took
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    outcome_of: dict[str, str] = field(default_factory=dict)  # command_id → status
    wrong: list[str] = field(default_factory=list)  # outcomes and balances against the model
    offsets_committed: int | None = None
    # Summed over the wallet processes: how long their command loops waited for the broker
    # (acknowledgements and offset commits) after deciding the next batch. None for the echo.
    broker_wait_seconds: float | None = None
    processes: int = 1

    @property
    def per_s(self) -> float:
        return self.commands / self.seconds

    @property
    def broker_wait_share(self) -> float | None:
        """The share of the run's wall time each wallet process spent waiting on the broker."""
        if self.broker_wait_seconds is None:
            return None
        return self.broker_wait_seconds / (self.seconds * self.processes)


@dataclass(frozen=True, slots=True)
class WalletProcess:
    """How to start the wallet: the command line (e.g. under a profiler) and environment to add."""

    argv: tuple[str, ...] = (sys.executable, "-m", "wallet")
    log_dir: Path | None = None
    extra_env: tuple[tuple[str, str], ...] = ()
    pid_file: Path | None = None  # where to write the wallet's pid, e.g. to attach a profiler
    mongodb_url: str | None = None  # set: the MongoDB store on a fresh database; None: in memory


@dataclass(slots=True)
class Started:
    processes: list[ManagedProcess]
    http_ports: list[int]
    database: str | None = None


async def start_wallet(
    bootstrap: str,
    topics: Topics,
    batch_size: int,
    how: WalletProcess,
    within: float = 60.0,
    *,
    instance: int = 0,
    database: str | None = None,
) -> tuple[ManagedProcess, int]:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "WALLET_STORE": "memory",
        "WALLET_HTTP_PORT": str(port),
        "WALLET_BATCH_MAX_RECORDS": str(batch_size),
        "AUTH_JWT_SECRET": JWT_SECRET,
        # A fresh group joins in about the session timeout: keep it short, the run is short.
        "WALLET_CONSUMER_SESSION_TIMEOUT_MS": "3000",
        "WALLET_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
        "LOG_LEVEL": "WARNING",
        **dict(how.extra_env),
    }
    if how.mongodb_url is not None and database is not None:
        env |= {
            "WALLET_STORE": "mongo",
            "MONGODB_URL": how.mongodb_url,
            "WALLET_MONGODB_DATABASE": database,
        }
    name = f"wallet-{topics.prefix.strip('.')}-{instance}"
    log_path = how.log_dir / f"{name}.log" if how.log_dir else None
    process = await start_service("wallet", how.argv, env, port, log_path, within)
    if how.pid_file is not None:
        how.pid_file.write_text(str(process.pid))
    return process, port


async def start_service(
    name: str, argv: Sequence[str], env: dict[str, str], port: int, log: Path | None, within: float
) -> ManagedProcess:
    """Start a service process and wait until its /healthz answers 200."""
    return await _started(name, argv, env, log, _healthy_on(port), within)


async def _started(
    name: str,
    argv: Sequence[str],
    env: dict[str, str],
    log: Path | None,
    ready: Callable[[], Awaitable[bool]],
    within: float,
) -> ManagedProcess:
    process = ManagedProcess(name, argv, env=env, log_path=log)
    try:
        await wait_until(
            name,
            ready,
            within=within,
            still_running=lambda: process.poll() is None,
            diagnostics=process.log_tail,
        )
    except BaseException:
        process.stop()
        raise
    return process


def results_service_env(
    prefix: str,
    bootstrap: str,
    topics: Topics,
    mongodb_url: str,
    database: str,
    port: int,
    jwt_secret: str = JWT_SECRET,
) -> dict[str, str]:
    """The environment of a service that keeps its state in MongoDB and follows wallet.results
    (trading, p2p): its settings are named `<prefix>_…`, its results group is the run's own."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "MONGODB_URL": mongodb_url,
        f"{prefix}_MONGODB_DATABASE": database,
        f"{prefix}_HTTP_PORT": str(port),
        f"{prefix}_RESULTS_CONSUMER_GROUP": f"{topics.prefix}{prefix.lower()}",
        # A fresh group joins in about the session timeout: keep it short, the run is short.
        f"{prefix}_RESULTS_SESSION_TIMEOUT_MS": "3000",
        f"{prefix}_RESULTS_HEARTBEAT_INTERVAL_MS": "500",
        "AUTH_JWT_SECRET": jwt_secret,
        "IS_STAGING": "true",
        "LOG_LEVEL": "WARNING",
    }


POLL_SECONDS = 0.01


async def poll_status(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    while_in: frozenset[str],
    within: float = 60.0,
) -> str:
    """`status` of the resource at `url` once it is no longer one of `while_in`, polled every
    10 ms (a client sees no push); the last one seen if that takes longer than `within`."""
    status = ""
    for _ in range(int(within / POLL_SECONDS)):
        response = await http.get(url, headers=headers)
        response.raise_for_status()
        status = str(response.json()["status"])
        if status not in while_in:
            return status
        await asyncio.sleep(POLL_SECONDS)
    return status


@dataclass(frozen=True, slots=True)
class Settled:
    answer: dict[str, Any]  # the POST's answer
    answer_ms: float  # POST sent → answered
    settled_ms: float  # POST sent → the status seen no longer pending
    status: str


async def post_until_settled(
    http: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    url_of: Callable[[dict[str, Any]], str],
    while_in: frozenset[str],
) -> Settled:
    """POST an action, then poll the resource it names (`url_of` its answer) until it settles."""
    started = time.perf_counter()
    posted = await http.post(path, json=body, headers=headers)
    posted.raise_for_status()
    answered = time.perf_counter()
    answer: dict[str, Any] = posted.json()
    status = await poll_status(http, url_of(answer), headers, while_in)
    settled = time.perf_counter()
    return Settled(answer, (answered - started) * 1000, (settled - started) * 1000, status)


async def start_echo(
    bootstrap: str, topics: Topics, batch_size: int, log_dir: Path | None, within: float = 60.0
) -> ManagedProcess:
    ready = Path(tempfile.mkdtemp(prefix="bench-echo-")) / "ready"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": topics.prefix,
        "ECHO_BATCH_MAX_RECORDS": str(batch_size),
        "ECHO_READY_FILE": str(ready),
    }
    log = log_dir / f"echo-{topics.prefix.strip('.')}.log" if log_dir else None

    async def joined() -> bool:
        return ready.exists()

    return await _started("echo", [sys.executable, "-m", "bench.echo"], env, log, joined, within)


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


async def _start(
    bootstrap: str,
    topics: Topics,
    batch_size: int,
    how: WalletProcess,
    consumer: Consumer,
    processes: int,
) -> Started:
    started = Started([], [])
    try:
        if consumer == "echo":
            started.processes.append(await start_echo(bootstrap, topics, batch_size, how.log_dir))
            return started
        if how.mongodb_url is not None:
            started.database = f"bench_pipeline_{uuid.uuid4().hex[:10]}"
        for instance in range(processes):
            process, port = await start_wallet(
                bootstrap, topics, batch_size, how, instance=instance, database=started.database
            )
            started.processes.append(process)
            started.http_ports.append(port)
        if processes > 1:
            # The later joins rebalanced the group: wait until every process holds partitions.
            for port in started.http_ports:
                await wait_until("wallet rebalance", _healthy_on(port), within=60)
    except BaseException:
        for process in started.processes:
            process.stop()
        raise
    return started


def _healthy_on(port: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200

    return probe


async def run_pipeline(
    bootstrap: str,
    workload: Workload,
    batch_size: int,
    *,
    how: WalletProcess | None = None,
    consumer: Consumer = "wallet",
    processes: int = 1,
    results_within: float = 300.0,
) -> PipelineRun:
    """One run of the whole pipeline on fresh topics; raises if a result never comes."""
    how = how or WalletProcess()
    topics = Topics(prefix=f"bench.{uuid.uuid4().hex[:8]}.b{batch_size}.")
    await ensure_topics(bootstrap, topics.all)
    started = await _start(bootstrap, topics, batch_size, how, consumer, processes)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    partitions = await producer.partitions_for(topics.results)
    reader = await _results_reader(bootstrap, topics.results, partitions)
    try:
        run = await _drive(producer, reader, topics, workload, batch_size, results_within)
        group = topics.group("echo" if consumer == "echo" else "wallet")
        run.offsets_committed = await _committed(bootstrap, group, topics.commands, len(workload))
        if consumer == "wallet":
            run.wrong = workload.wrong_outcomes(run.outcome_of)
            run.wrong += workload.wrong_balances(await _summed_balances(started, workload))
            run.broker_wait_seconds = await _broker_wait_seconds(started.http_ports)
            run.processes = processes
        if run.offsets_committed != len(workload):
            run.wrong.append(f"offsets committed {run.offsets_committed} != {len(workload)}")
        return run
    finally:
        await producer.stop()
        await reader.stop()
        for process in started.processes:
            process.stop()
        await delete_topics(bootstrap, topics)
        if started.database is not None and how.mongodb_url is not None:
            await _drop(how.mongodb_url, started.database)


async def _broker_wait_seconds(ports: Sequence[int]) -> float:
    """`wallet_broker_wait_seconds_sum` of every wallet process, from its /metrics."""
    total = 0.0
    async with httpx.AsyncClient(timeout=10) as http:
        for port in ports:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "wallet_broker_wait_seconds_sum":
                        total += sample.value
    return total


async def _committed(bootstrap: str, group: str, topic: str, expected: int) -> int:
    # The last batch's offsets are committed just after its results are published.
    deadline = time.monotonic() + 15
    while True:
        committed = await offsets_committed(bootstrap, group, topic)
        if committed >= expected or time.monotonic() > deadline:
            return committed
        await asyncio.sleep(0.2)


def users_of(workload: Workload) -> list[str]:
    return sorted(
        {c["user_id"] for c in workload.commands}
        | {c["to_user"] for c in workload.commands if "to_user" in c}
    )


async def wallet_balances(port: int, users: Sequence[str]) -> dict[WalletKey, Balances]:
    """Every wallet of those users, (available, locked, total), read through the wallet's API."""
    limit = asyncio.Semaphore(16)
    found: dict[WalletKey, Balances] = {}

    async def one(http: httpx.AsyncClient, user: str) -> None:
        headers = {"Authorization": f"Bearer {make_token(JWT_SECRET, user)}"}
        async with limit:
            response = await http.get(f"/api/wallets/balances/{user}", headers=headers)
        response.raise_for_status()
        for row in response.json()["balances"]:
            found[(user, row["currency"])] = (
                Decimal(row["available_balance"]),
                Decimal(row["locked_balance"]),
                Decimal(row["total_balance"]),
            )

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        await asyncio.gather(*(one(http, user) for user in users))
    return found


async def platform_balances(port: int) -> dict[WalletKey, Decimal]:
    """Every platform account's balance per currency, read through the wallet's admin API."""
    headers = {"Authorization": f"Bearer {make_token(JWT_SECRET, 'bench', ('admin',))}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        response = await http.get("/api/wallets/platform-balances", headers=headers)
    response.raise_for_status()
    return {
        (row["account"], row["currency"]): Decimal(row["balance"])
        for row in response.json()["accounts"]
    }


async def _summed_balances(started: Started, workload: Workload) -> dict[WalletKey, Balances]:
    """Each wallet's balances summed over the wallet processes. With the memory store each process
    is a ledger of its own: a user's commands all land in one (its partition), but a transfer
    credits the payee where the payer's partition is. The sums are what one shared store holds."""
    users = users_of(workload)
    summed: dict[WalletKey, Balances] = {}
    for port in started.http_ports:
        for key, found in (await wallet_balances(port, users)).items():
            before = summed.get(key, (Decimal(0), Decimal(0), Decimal(0)))
            summed[key] = (before[0] + found[0], before[1] + found[1], before[2] + found[2])
    return summed


async def _drop(url: str, database: str) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    with contextlib.suppress(Exception):
        await client.drop_database(database)
    await client.close()


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

    last_published = first_sent
    deadline = time.monotonic() + results_within
    while len(run.outcome_of) < len(issued):
        if time.monotonic() > deadline:
            missing = len(issued) - len(run.outcome_of)
            raise TimeoutError(f"{missing} results missing after {results_within:.0f}s")
        batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
        for records in batches.values():
            for record in records:
                result = json.loads(record.value)
                command_id = result["command_id"]
                if command_id not in issued or command_id in run.outcome_of:
                    continue
                run.outcome_of[command_id] = result["status"]
                published = record.timestamp / 1000
                run.latencies_ms.append(max(0.0, published - issued[command_id]) * 1000)
                run.statuses[result["status"]] += 1
                last_published = max(last_published, published)
    run.seconds = last_published - first_sent
    return run
