"""Kafka and MongoDB for a run: the ones configured, real containers, or the embedded stand-ins."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from shared.infra.kafka import EmbeddedKafka, ensure_topics, wait_for_kafka
from shared.infra.mongo import EmbeddedMongo, wait_for_mongo
from shared.infra.net import LOOPBACK, free_port
from shared.infra.processes import EmbeddedServer
from shared.messaging.topics import ALL_TOPICS, DEFAULT_PARTITIONS

log = logging.getLogger(__name__)

KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"
MONGODB_ENV = "MONGODB_URL"
TESTCONTAINERS_ENV = "USE_TESTCONTAINERS"


class _Server(Protocol):
    @property
    def address(self) -> str: ...
    async def start(self, within: float) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """Where one piece of infrastructure is and how it got there."""

    name: str
    address: str
    origin: str  # "configured", "container" or "embedded"
    pid: int | None = None

    def describe(self) -> str:
        pid = f", pid {self.pid}" if self.pid is not None else ""
        return f"{self.name}: {self.address} ({self.origin}{pid})"


class Infrastructure:
    """Kafka and MongoDB for tests and ``make run``; use as ``async with`` or ``with``.

    A configured address (``kafka_bootstrap_servers`` / ``mongodb_url``) is used as it is; otherwise
    real containers are started when ``use_testcontainers`` is set and Docker answers, and the
    embedded stand-ins on loopback otherwise (``kafka_port`` / ``mongodb_port``; 0 = a free one).
    Either way every topic in ``topics`` exists with ``partitions`` partitions once started.
    """

    def __init__(
        self,
        *,
        kafka_bootstrap_servers: str | None = None,
        mongodb_url: str | None = None,
        use_testcontainers: bool = False,
        kafka_port: int = 0,
        mongodb_port: int = 0,
        host: str = LOOPBACK,
        topics: Sequence[str] = ALL_TOPICS,
        partitions: int = DEFAULT_PARTITIONS,
        log_dir: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._configured_kafka = kafka_bootstrap_servers
        self._configured_mongodb = mongodb_url
        self.use_testcontainers = use_testcontainers
        self.kafka_port = kafka_port
        self.mongodb_port = mongodb_port
        self.host = host
        self.topics = tuple(topics)
        self.partitions = partitions
        self.log_dir = log_dir
        self.timeout = timeout
        self._started: list[_Server] = []
        self._kafka: Endpoint | None = None
        self._mongodb: Endpoint | None = None

    @classmethod
    def from_environment(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        kafka_port: int = 0,
        mongodb_port: int = 0,
        log_dir: Path | None = None,
        timeout: float = 60.0,
    ) -> Self:
        """Read ``KAFKA_BOOTSTRAP_SERVERS``, ``MONGODB_URL`` and ``USE_TESTCONTAINERS``."""
        env = os.environ if env is None else env
        return cls(
            kafka_bootstrap_servers=env.get(KAFKA_ENV) or None,
            mongodb_url=env.get(MONGODB_ENV) or None,
            use_testcontainers=env.get(TESTCONTAINERS_ENV, "").lower() in {"1", "true", "yes"},
            kafka_port=kafka_port,
            mongodb_port=mongodb_port,
            log_dir=log_dir,
            timeout=timeout,
        )

    @property
    def kafka(self) -> Endpoint:
        if self._kafka is None:
            raise RuntimeError("infrastructure is not started")
        return self._kafka

    @property
    def mongodb(self) -> Endpoint:
        if self._mongodb is None:
            raise RuntimeError("infrastructure is not started")
        return self._mongodb

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.kafka.address

    @property
    def mongodb_url(self) -> str:
        return self.mongodb.address

    @property
    def pids(self) -> list[int]:
        """Processes this object started (the embedded servers)."""
        return [e.pid for e in (self._kafka, self._mongodb) if e is not None and e.pid is not None]

    async def start(self) -> Self:
        try:
            # One after the other: a failure then leaves nothing half-started behind.
            await self._start_kafka()
            await self._start_mongodb()
            await ensure_topics(
                self.kafka_bootstrap_servers, self.topics, self.partitions, within=self.timeout
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop whatever was started, newest first; configured servers are left alone."""
        while self._started:
            self._started.pop().stop()
        self._kafka = self._mongodb = None

    def _containers_wanted(self) -> bool:
        if not self.use_testcontainers:
            return False
        from shared.infra.containers import docker_available

        if docker_available():
            return True
        log.warning("%s is set but no Docker engine answers: embedded servers", TESTCONTAINERS_ENV)
        return False

    async def _start_kafka(self) -> None:
        def container() -> _Server:
            from shared.infra.containers import KafkaContainer

            return KafkaContainer()

        port = self.kafka_port or free_port(self.host)
        self._kafka = await self._provide(
            "kafka",
            self._configured_kafka,
            wait_for_kafka,
            container,
            lambda: EmbeddedKafka(port, host=self.host, log_dir=self.log_dir),
        )

    async def _start_mongodb(self) -> None:
        def container() -> _Server:
            from shared.infra.containers import MongoReplicaSetContainer

            return MongoReplicaSetContainer()

        port = self.mongodb_port or free_port(self.host)
        self._mongodb = await self._provide(
            "mongodb",
            self._configured_mongodb,
            wait_for_mongo,
            container,
            lambda: EmbeddedMongo(port, host=self.host, log_dir=self.log_dir),
        )

    async def _provide(
        self,
        name: str,
        configured: str | None,
        wait: Callable[[str, float, str], Awaitable[None]],
        container: Callable[[], _Server],
        embedded: Callable[[], EmbeddedServer],
    ) -> Endpoint:
        if configured:
            await wait(configured, self.timeout, f"configured {name}")
            return Endpoint(name, configured, "configured")
        server, origin = (
            (container(), "container") if self._containers_wanted() else (embedded(), "embedded")
        )
        self._started.append(server)
        await server.start(self.timeout)
        process = server.process if isinstance(server, EmbeddedServer) else None
        return Endpoint(name, server.address, origin, process.pid if process else None)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __enter__(self) -> Self:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.start())
        raise RuntimeError("inside an event loop use `async with Infrastructure(...)`")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
