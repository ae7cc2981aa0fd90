"""Fixtures of the trading service's tests: a fake clock, apps served on real ports, polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn

from shared.http import make_token
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


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    """An ASGI app on a real loopback port (lifespan included) for the duration of the block."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during startup")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def eventually(probe: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    """Wait until `probe()` is true (results travel through Kafka asynchronously)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def serve_app() -> Callable[[Any, int], contextlib.AbstractAsyncContextManager[str]]:
    return serving


@pytest.fixture(scope="session")
def until() -> Callable[..., Awaitable[None]]:
    return eventually
