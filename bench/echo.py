"""`python -m bench.echo`: the ceiling the broker and the Kafka client allow, in the same run.

A consumer in the wallet's place that does nothing but the Kafka work: it reads each command of a
batch, takes its command_id (one JSON decode), publishes two small messages per command (a
"result" on `wallet.results` keyed like the wallet's, an "event" on `wallet.events`), waits for
the acknowledgements and commits the offsets, batch after batch. It publishes the way the wallet
does (one record batch per partition), so wallet ÷ echo is the share of the ceiling the wallet
reaches: `pipeline_efficiency`.

Environment: KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC_PREFIX, ECHO_BATCH_MAX_RECORDS, ECHO_READY_FILE
(written once the consumer holds partitions).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from shared.messaging.topics import Topics
from wallet.adapters.kafka_publisher import MAX_BATCH_BYTES, KeyPartitioner, PartitionBatches

GROUP = "echo"


class _Ready(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, path: Path) -> None:
        self.path = path

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.path.write_text("ready")


async def echo(bootstrap: str, topics: Topics, batch_size: int, ready: Path) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=topics.group(GROUP),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        max_poll_records=batch_size,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_batch_size=MAX_BATCH_BYTES,
        max_request_size=4 * MAX_BATCH_BYTES,
    )
    consumer.subscribe([topics.commands], listener=_Ready(ready))
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        partitions = {
            topic: sorted(await producer.partitions_for(topic))
            for topic in (topics.results, topics.events)
        }
        partition_of = KeyPartitioner()
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=50, max_records=batch_size)
            if not fetched:
                continue
            batches = PartitionBatches(producer)
            for records in fetched.values():
                for record in records:
                    key = record.key or b""
                    command_id = json.loads(record.value or b"{}")["command_id"]
                    small = json.dumps({"command_id": command_id, "status": "echo"}).encode()
                    for topic, owned in partitions.items():
                        await batches.add(topic, partition_of(key, owned), key, small, [])
            await batches.flush()
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    topics = Topics(prefix=os.environ.get("KAFKA_TOPIC_PREFIX", ""))
    asyncio.run(
        echo(
            os.environ["KAFKA_BOOTSTRAP_SERVERS"],
            topics,
            int(os.environ.get("ECHO_BATCH_MAX_RECORDS", "500")),
            Path(os.environ["ECHO_READY_FILE"]),
        )
    )


if __name__ == "__main__":
    main()
