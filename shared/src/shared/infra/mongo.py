"""MongoDB: the embedded stand-in's process, readiness, and replica-set initiation."""

from __future__ import annotations

import os
import sys
from typing import Any

from pymongo import AsyncMongoClient

from shared.infra.net import wait_for_address, wait_until
from shared.infra.processes import EmbeddedServer


def embedded_mongodb_url(host: str, port: int) -> str:
    # A single server, not a replica set: drivers must not try to discover members.
    return f"mongodb://{host}:{port}/?directConnection=true"


async def mongo_ready(url: str) -> bool:
    """True once the server answers ``ping``."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
    )
    try:
        await client.admin.command("ping")
        return True
    finally:
        await client.close()


async def wait_for_mongo(url: str, within: float, what: str = "MongoDB") -> None:
    await wait_for_address(what, mongo_ready, url, within=within)


async def initiate_single_node_replica_set(url: str, member_host: str, within: float) -> None:
    """Turn a fresh ``mongod --replSet rs0`` into a writable one-member replica set."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        hello = await client.admin.command("hello")
        if "setName" not in hello:
            config = {"_id": "rs0", "members": [{"_id": 0, "host": member_host}]}
            await client.admin.command("replSetInitiate", config)

        async def primary() -> bool:
            reply = await client.admin.command("hello")
            return bool(reply.get("isWritablePrimary"))

        await wait_until("MongoDB replica set primary", primary, within=within)
    finally:
        await client.close()


class EmbeddedMongo(EmbeddedServer):
    """``python -m shared.infra.mongo_server`` on one loopback port, in its own process."""

    name = "mongodb"

    @property
    def address(self) -> str:
        return embedded_mongodb_url(self.host, self.port)

    @property
    def url(self) -> str:
        return self.address

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "shared.infra.mongo_server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--parent-pid",
            str(os.getpid()),
        ]

    async def ready(self) -> bool:
        return await mongo_ready(self.url)
