"""Kafka and MongoDB for tests and ``make run``: configured, in containers, or embedded."""

from shared.infra.infrastructure import (
    KAFKA_ENV,
    MONGODB_ENV,
    TESTCONTAINERS_ENV,
    Endpoint,
    Infrastructure,
)
from shared.infra.kafka import (
    EmbeddedKafka,
    ensure_topics,
    kafka_ready,
    offsets_committed,
    topic_partitions,
    wait_for_kafka,
)
from shared.infra.mongo import EmbeddedMongo, embedded_mongodb_url, mongo_ready, wait_for_mongo
from shared.infra.net import LOOPBACK, StartupError, free_port, wait_until
from shared.infra.processes import ManagedProcess, pid_alive, stop_all, wait_until_gone

__all__ = [
    "KAFKA_ENV",
    "LOOPBACK",
    "MONGODB_ENV",
    "TESTCONTAINERS_ENV",
    "EmbeddedKafka",
    "EmbeddedMongo",
    "Endpoint",
    "Infrastructure",
    "ManagedProcess",
    "StartupError",
    "embedded_mongodb_url",
    "ensure_topics",
    "free_port",
    "kafka_ready",
    "mongo_ready",
    "offsets_committed",
    "pid_alive",
    "stop_all",
    "topic_partitions",
    "wait_for_kafka",
    "wait_for_mongo",
    "wait_until",
    "wait_until_gone",
]
