"""Fixtures of the trading service's tests: a fake clock and signed bearer headers (apps served
on real ports and polling: `serve_app` / `until` from shared.testing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import make_token
from shared.testing.fixtures import unique_database_name
from trading.testing import FakeClock

JWT_SECRET = "trading-tests-jwt-secret-of-at-least-32-bytes"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def auth(user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}


Auth = Callable[..., dict[str, str]]


@pytest.fixture(scope="session")
def auth_headers() -> Auth:
    """auth_headers("amy") / auth_headers("ops", "admin"): a bearer header signed with JWT_SECRET."""
    return auth


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return JWT_SECRET


type Database = AsyncDatabase[dict[str, Any]]


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.integration)])
def _store_kind(request: pytest.FixtureRequest) -> Database | None:
    """Sync on purpose: the MongoDB fixtures are pulled only by the MongoDB variant."""
    if request.param == "memory":
        return None
    client: AsyncMongoClient[dict[str, Any]] = request.getfixturevalue("mongo_client")
    return client[unique_database_name(f"trading_{request.node.originalname}")]


@pytest_asyncio.fixture
async def store_database(_store_kind: Database | None) -> AsyncIterator[Database | None]:
    """Each test of a store suite twice: None for the in-memory stores, then a fresh MongoDB
    database (dropped afterwards) for the MongoDB ones."""
    if _store_kind is None:
        yield None
        return
    try:
        yield _store_kind
    finally:
        await _store_kind.client.drop_database(_store_kind.name)
