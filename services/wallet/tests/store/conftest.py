"""Fixtures of the store suite: every test runs against the in-memory store and against MongoDB.

MongoDB is `MONGODB_URL` when set (a real replica set), otherwise the embedded stand-in started
here in a process of its own, on a free loopback port, for the whole session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.adapters.mongo_store import MongoLedgerStore
from wallet.application.ports import LedgerStore

# The stand-in is a library class with no command line: this is its launcher.
_SERVER = """
import asyncio, sys
from mongoeco.wire import AsyncMongoEcoProxyServer

async def main() -> None:
    server = AsyncMongoEcoProxyServer(host="127.0.0.1", port=int(sys.argv[1]))
    await server.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""
_START_WITHIN_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def mongodb_url() -> Iterator[str]:
    if url := os.environ.get("MONGODB_URL"):
        yield url
        return
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)])
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        deadline = time.monotonic() + _START_WITHIN_SECONDS
        while not _answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded MongoDB did not start on port {port}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mongo_client(mongodb_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def is_stand_in(mongodb_url: str) -> bool:
    """Whether MongoDB is the embedded stand-in, whose known gaps some tests mark."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_url)
    try:
        return client.admin.command("buildInfo").get("gitVersion") == "mongoeco"
    finally:
        client.close()


def fresh_database_name(request: pytest.FixtureRequest) -> str:
    # Per test, not per module: the stand-in slows down as collections grow, and tests of one
    # module then never see each other's wallets.
    return f"store_{request.node.name[:30]}_{uuid.uuid4().hex[:8]}".translate(
        str.maketrans("[]-.", "____")
    )


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.integration)])
def bare_store(request: pytest.FixtureRequest) -> LedgerStore:
    """A store not yet set up. Sync on purpose: MongoDB fixtures are pulled only by its variant."""
    if request.param == "memory":
        return InMemoryLedgerStore()
    client: AsyncMongoClient[dict[str, Any]] = request.getfixturevalue("mongo_client")
    return MongoLedgerStore(client[fresh_database_name(request)])


@pytest_asyncio.fixture
async def store(bare_store: LedgerStore) -> AsyncIterator[LedgerStore]:
    if not isinstance(bare_store, MongoLedgerStore):
        yield bare_store
        return
    await bare_store.ensure_indexes()
    try:
        yield bare_store
    finally:
        await bare_store.database.client.drop_database(bare_store.database.name)
