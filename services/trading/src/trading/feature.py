"""What a feature of the trading service is, and what the composition root hands it.

A feature (prices, conversions, spot, savings, referrals, …) is built by a factory
``(TradingContext) -> Feature``. The context carries the ONE of each shared resource; the
feature returns its HTTP routers, its handlers of wallet results (by transaction_type) and its
lifecycle hooks. See `trading.bootstrap` for how factories are listed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from fastapi import APIRouter
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging import CommandResult
from shared.wallet_client import WalletClient
from trading.messaging import EventPublisher
from trading.prices.domain import PriceBook
from trading.settings import TradingSettings

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
Hook = Callable[[], Awaitable[None]]
ReadinessCheck = Callable[[], Awaitable[bool]]
ResultHandler = Callable[[CommandResult], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def _nothing() -> None:
    return None


async def _always_ready() -> bool:
    return True


@dataclass(frozen=True)
class TradingContext:
    """The shared resources of one trading process; features must not open their own."""

    settings: TradingSettings
    database: AsyncDatabase[dict[str, Any]]
    # Wallet commands: publish with wait=False and follow the outcome in a result handler.
    wallet: WalletClient
    # Any other Kafka topic (market.prices, trading.orders): one producer for the process.
    publisher: EventPublisher
    # The latest price of every currency, as read from market.prices (never quote a stale one).
    prices: PriceBook
    clock: Clock = utc_now


@dataclass
class Feature:
    """One feature plugged into the service.

    result_handlers: wallet.results whose transaction_type is a key go to that handler (each
    transaction_type belongs to exactly one feature; the dispatcher refuses a second owner).
    A handler must be idempotent: results are delivered at least once.
    """

    name: str
    routers: Sequence[APIRouter] = ()
    result_handlers: Mapping[str, ResultHandler] = field(default_factory=dict)
    start: Hook = _nothing
    stop: Hook = _nothing
    ready: ReadinessCheck = _always_ready


class BackgroundTasks:
    """A feature's background tasks: started by its `start`, cancelled by its `stop`; `alive`
    (part of its readiness) while none of them has ended."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    def every(self, name: str, interval: float, action: Hook, *, failure_event: str) -> None:
        """Runs `action` every `interval` seconds (the first time after one interval); a failure
        is logged as `failure_event` and the next run comes as usual."""

        async def repeat() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await action()
                except Exception:
                    log.exception(failure_event)

        self.spawn(name, repeat())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def alive(self) -> bool:
        return all(not task.done() for task in self._tasks)


class FeatureFactory(Protocol):
    def __call__(self, context: TradingContext, /) -> Feature: ...
