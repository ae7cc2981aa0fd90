"""What a feature of the trading service is, and what the composition root hands it.

A feature (prices, conversions, spot, savings, referrals, …) is built by a factory
``(TradingContext) -> Feature``. The context carries the ONE of each shared resource; the
feature returns its HTTP routers, its handlers of wallet results (by transaction_type) and its
lifecycle hooks. See `trading.bootstrap` for how factories are listed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import APIRouter
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging import CommandResult
from shared.wallet_client import WalletClient
from trading.messaging import EventPublisher
from trading.prices.domain import PriceBook
from trading.settings import TradingSettings

Clock = Callable[[], datetime]
Hook = Callable[[], Awaitable[None]]
ReadinessCheck = Callable[[], Awaitable[bool]]
ResultHandler = Callable[[CommandResult], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


def of_types(*transaction_types: str) -> Callable[[CommandResult], bool]:
    """`asked_again` for a feature that asks again about every command of these types."""
    wanted = frozenset(transaction_types)
    return lambda result: result.transaction_type in wanted


def _asks_again_about_nothing(result: CommandResult) -> bool:
    return False


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
    asked_again: whether a result of the feature's is the answer to a command a pass of the
    feature sends again while its record waits: a not-final answer (`CommandResult.final`) to one
    is no answer yet and is not handed to the handler. Any other is handled as the refusal it
    says.
    """

    name: str
    routers: Sequence[APIRouter] = ()
    result_handlers: Mapping[str, ResultHandler] = field(default_factory=dict)
    asked_again: Callable[[CommandResult], bool] = _asks_again_about_nothing
    start: Hook = _nothing
    stop: Hook = _nothing
    ready: ReadinessCheck = _always_ready


class FeatureFactory(Protocol):
    def __call__(self, context: TradingContext, /) -> Feature: ...
