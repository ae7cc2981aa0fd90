"""A service's background loops (outbox relays, sweepers, asking the wallet again): started with
the service, cancelled when it stops, and `alive` while none of them has ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from shared.logging import get_logger

log = get_logger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    def every(
        self,
        name: str,
        interval: float,
        action: Callable[[], Awaitable[object]],
        *,
        failure_event: str,
        at_once: bool = False,
    ) -> None:
        """Runs `action` every `interval` seconds: the first time after one interval, or at once
        (`at_once`: what a stopped process left is taken up on start). A failure is logged as
        `failure_event` and the next run comes as usual."""

        async def repeat() -> None:
            if not at_once:
                await asyncio.sleep(interval)
            while True:
                try:
                    await action()
                except Exception:
                    log.exception(failure_event, task=name)
                await asyncio.sleep(interval)

        self.spawn(name, repeat())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def alive(self) -> bool:
        return all(not task.done() for task in self._tasks)
