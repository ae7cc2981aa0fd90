"""pytest plugin: Kafka and MongoDB for integration tests.

Registered once, from the root ``conftest.py``: ``pytest_plugins = ["shared.testing.fixtures"]``.
The infrastructure starts on first use (free loopback ports, so runs never collide) and stops at the
end of the session; ``KAFKA_BOOTSTRAP_SERVERS`` / ``MONGODB_URL`` / ``USE_TESTCONTAINERS=1`` pick
real servers instead. Tests that use it are marked ``integration`` automatically.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.infra import Infrastructure
from shared.infra.kafka import ensure_topics
from shared.messaging.topics import Topics
from shared.mongo import connect
from shared.testing.services import eventually, serving

_INFRA_FIXTURES = frozenset(
    {
        "infrastructure",
        "kafka_bootstrap_servers",
        "kafka_topics",
        "mongodb_url",
        "mongo_client",
        "mongo_database",
    }
)
# MongoDB database names: at most 63 bytes, none of / \ . " $ space.
_DB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")
_DB_NAME_MAX = 63


def unique_database_name(prefix: str = "test") -> str:
    """A database name no other test uses: the embedded server slows down as collections grow."""
    suffix = uuid.uuid4().hex[:12]
    safe = _DB_NAME_UNSAFE.sub("_", prefix).strip("_") or "test"
    return f"{safe[: _DB_NAME_MAX - len(suffix) - 1]}_{suffix}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INFRA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def infrastructure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Infrastructure]:
    """Kafka (every contract topic created) and MongoDB for the whole session."""
    async with Infrastructure.from_environment(
        log_dir=tmp_path_factory.mktemp("infra-logs")
    ) as infra:
        yield infra


@pytest.fixture(scope="session")
def kafka_bootstrap_servers(infrastructure: Infrastructure) -> str:
    return infrastructure.kafka_bootstrap_servers


@pytest.fixture(scope="session")
def mongodb_url(infrastructure: Infrastructure) -> str:
    return infrastructure.mongodb_url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mongo_client(mongodb_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client = connect(mongodb_url)  # as the services connect: aware UTC datetimes
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.integration)])
def memory_or_mongo(request: pytest.FixtureRequest) -> AsyncDatabase[dict[str, Any]] | None:
    """For a test run over the memory stores and over MongoDB: None for the memory variant, a
    database of its own for the MongoDB one (the test's fixtures drop it). Sync on purpose: the
    MongoDB fixtures are pulled only by its variant."""
    if request.param == "memory":
        return None
    client: AsyncMongoClient[dict[str, Any]] = request.getfixturevalue("mongo_client")
    return client[unique_database_name(request.node.originalname)]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mongo_database(
    request: pytest.FixtureRequest, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A fresh database for one test module, dropped afterwards."""
    name = unique_database_name(request.module.__name__.rsplit(".", 1)[-1])
    try:
        yield mongo_client[name]
    finally:
        await mongo_client.drop_database(name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def kafka_topics(request: pytest.FixtureRequest, kafka_bootstrap_servers: str) -> Topics:
    """The contract's topics under a prefix of this module's own, created before any consumer."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    topics = Topics(prefix=f"{_DB_NAME_UNSAFE.sub('_', module)[:40]}.{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka_bootstrap_servers, topics.all)
    return topics


@pytest.fixture(scope="session")
def serve_app() -> Callable[[Any, int], AbstractAsyncContextManager[str]]:
    """serve_app(app, port): shared.testing.services.serving, for tests that cannot import it."""
    return serving


@pytest.fixture(scope="session")
def until() -> Callable[..., Awaitable[None]]:
    """until(probe, within=...): shared.testing.services.eventually."""
    return eventually
