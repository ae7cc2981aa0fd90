"""Reading a topic back in the wallet's Kafka tests."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.messaging import CommandResult


async def results_so_far(bootstrap: str, topic: str) -> list[CommandResult]:
    """Every result on `topic` so far, read from the beginning by a consumer of no group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        assigned = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        results: list[CommandResult] = []
        while any([await consumer.position(tp) < ends[tp] for tp in assigned]):
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                results.extend(
                    CommandResult.model_validate_json(r.value) for r in records if r.value
                )
        return results
    finally:
        await consumer.stop()
