"""Running the wallet in the test's process against Kafka and MongoDB."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from wallet.bootstrap import WalletRuntime, build_runtime
from wallet.settings import WalletSettings


async def until(probe: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not await probe():
            await asyncio.sleep(0.1)


async def started_wallet(settings: WalletSettings) -> WalletRuntime:
    """A wallet whose consumer has joined its group."""
    runtime = build_runtime(settings)
    await runtime.start()
    await until(runtime.ready)
    return runtime
