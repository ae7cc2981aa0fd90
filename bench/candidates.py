"""`python -m bench.candidates`: the hot path's candidates, side by side, in one run.

- Decoding a command: the standard library's json (with Decimal floats, as the wallet did), orjson
  (if installed), msgspec; and the whole `parse_command` on the standard path against today's.
- Sending the wallet's messages to the embedded (or configured) broker: aiokafka `send` per
  message, aiokafka one record batch per partition (`send_batch`, what the wallet does now), and
  librdkafka's producer (confluent-kafka, if installed; FastStream supports it too).

Absolute figures move with the machine: read the ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from bench.workload import build_workload
from shared.infra import Infrastructure, ensure_topics
from shared.messaging import parse_command
from shared.messaging.commands import _decode_standard
from shared.messaging.topics import Topics
from wallet.adapters.kafka_publisher import MAX_BATCH_BYTES, KeyPartitioner, PartitionBatches


def _best_us(function: Callable[[bytes], object], raws: list[bytes], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for raw in raws:
            function(raw)
        best = min(best, time.perf_counter() - started)
    return best / len(raws) * 1e6


def decoding(commands: int) -> dict[str, float]:
    workload = build_workload(commands, users=1000)
    raws = [workload.encoded(i) for i in range(len(workload))]
    fast = msgspec.json.Decoder()
    figures = {
        "json_stdlib_decimal_us": _best_us(_decode_standard, raws),
        "msgspec_us": _best_us(fast.decode, raws),
    }
    try:
        orjson: Any = importlib.import_module("orjson")
        figures["orjson_us"] = _best_us(orjson.loads, raws)
    except ImportError:
        pass

    def standard_parse(raw: bytes) -> object:
        from shared.messaging.commands import WALLET_COMMAND

        return WALLET_COMMAND.validate_python(_decode_standard(raw))

    figures["parse_command_standard_json_us"] = _best_us(standard_parse, raws)
    figures["parse_command_us"] = _best_us(parse_command, raws)
    return figures


def _messages(count: int) -> list[tuple[bytes, bytes]]:
    workload = build_workload(count, users=1000)
    return [
        (c["user_id"].encode(), json.dumps({**c, "status": "applied"}).encode())
        for c in workload.commands
    ]


async def _aiokafka_per_message(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]
) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=MAX_BATCH_BYTES
    )
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _aiokafka_per_batch(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]
) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=MAX_BATCH_BYTES
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partition_of = KeyPartitioner()
        started = time.perf_counter()
        for first in range(0, len(messages), 500):  # the wallet's batches
            batches = PartitionBatches(producer)
            for key, value in messages[first : first + 500]:
                await batches.add(topic, partition_of(key, partitions), key, value, [])
            await batches.flush()
        return time.perf_counter() - started
    finally:
        await producer.stop()


def _confluent(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float | None:
    try:
        confluent: Any = importlib.import_module("confluent_kafka")
    except ImportError:
        return None
    producer = confluent.Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": False}
    )
    producer.list_topics(topic, timeout=10)
    started = time.perf_counter()
    for first in range(0, len(messages), 500):
        for key, value in messages[first : first + 500]:
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(30)  # the wallet waits for every acknowledgement before committing
    return time.perf_counter() - started


async def producing(bootstrap: str, count: int) -> dict[str, float | None]:
    messages = _messages(count)
    figures: dict[str, float | None] = {}
    for name, send in (
        ("aiokafka_send_per_message", _aiokafka_per_message),
        ("aiokafka_send_batch_per_partition", _aiokafka_per_batch),
    ):
        topics = Topics(prefix=f"candidates.{name}.{time.time_ns()}.")
        await ensure_topics(bootstrap, [topics.results])
        figures[f"{name}_per_s"] = count / await send(bootstrap, topics.results, messages)
    topics = Topics(prefix=f"candidates.confluent.{time.time_ns()}.")
    await ensure_topics(bootstrap, [topics.results])
    seconds = await asyncio.to_thread(_confluent, bootstrap, topics.results, messages)
    figures["confluent_kafka_produce_per_s"] = None if seconds is None else count / seconds
    return figures


async def run(commands: int, messages: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"decoding": decoding(commands)}
    async with Infrastructure.from_environment() as infra:
        figures["producing"] = await producing(infra.kafka_bootstrap_servers, messages)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.candidates", description=__doc__)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    figures = asyncio.run(run(args.commands, args.messages))
    print(
        json.dumps(
            figures, indent=2, default=lambda d: float(d) if isinstance(d, Decimal) else str(d)
        )
    )


if __name__ == "__main__":
    main()
