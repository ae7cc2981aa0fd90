"""Real Kafka (apache/kafka, KRaft) and a one-member MongoDB replica set through testcontainers.

Used when ``USE_TESTCONTAINERS=1`` and a Docker engine answers. testcontainers is a development
dependency, so it is imported only here and only when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from shared.infra.kafka import wait_for_kafka
from shared.infra.mongo import initiate_single_node_replica_set, wait_for_mongo
from shared.infra.net import LOOPBACK, free_port

KAFKA_IMAGE: Final = "apache/kafka:3.9.1"
MONGO_IMAGE: Final = "mongo:8.0"


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no permission: all mean "no Docker here"
        return False


def kraft_environment(advertised_host: str, advertised_port: int) -> dict[str, str]:
    """Single-node KRaft broker+controller (same settings as deploy/docker-compose.yml)."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{advertised_host}:{advertised_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


class KafkaContainer:
    def __init__(self) -> None:
        self.container: Any = None
        self.address = ""

    async def start(self, within: float) -> None:
        from testcontainers.core.container import DockerContainer

        # The advertised address must be known before start, so the host port is chosen here.
        port = free_port()
        container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
        for key, value in kraft_environment(LOOPBACK, port).items():
            container.with_env(key, value)
        self.container = container
        await asyncio.to_thread(container.start)
        self.address = f"{LOOPBACK}:{port}"
        await wait_for_kafka(self.address, within, "Kafka container")

    def stop(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.stop()


class MongoReplicaSetContainer:
    def __init__(self) -> None:
        self.container: Any = None
        self.address = ""

    async def start(self, within: float) -> None:
        from testcontainers.core.container import DockerContainer

        container = (
            DockerContainer(MONGO_IMAGE)
            .with_command("--replSet rs0 --bind_ip_all")
            .with_exposed_ports(27017)
        )
        self.container = container
        await asyncio.to_thread(container.start)
        host = container.get_container_host_ip()
        port = container.get_exposed_port(27017)
        # directConnection: the member's own name (localhost:27017) is not reachable from here.
        self.address = f"mongodb://{host}:{port}/?directConnection=true"
        await wait_for_mongo(self.address, within, "MongoDB container")
        await initiate_single_node_replica_set(self.address, "localhost:27017", within)

    def stop(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.stop()
