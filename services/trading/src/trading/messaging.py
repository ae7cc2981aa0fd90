"""Kafka plumbing shared by the trading features: one producer, the wallet.results consumer and
its dispatcher (consumer groups are shared.results_consumer's; the group-less reader of
market.prices is shared.recent_messages')."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from shared.messaging import CommandResult
from shared.results_consumer import WalletResultsConsumer

log = structlog.get_logger(__name__)

ResultHandler = Callable[[CommandResult], Awaitable[None]]


class EventPublisher:
    """The process's one Kafka producer for the topics it owns (not wallet.commands: WalletClient)."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers, acks="all")
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        self._producer = None

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        if self._producer is None:
            raise RuntimeError("EventPublisher is not started")
        await self._producer.send_and_wait(topic, value, key=key.encode())


class ResultsDispatcher:
    """Routes each wallet result to the feature that owns its transaction_type; ignores the rest
    (other services' results share the topic)."""

    def __init__(self) -> None:
        self._handlers: dict[str, ResultHandler] = {}
        self._asked_again: dict[str, Callable[[CommandResult], bool]] = {}

    def register(
        self,
        handlers: Mapping[str, ResultHandler],
        owner: str,
        asked_again: Callable[[CommandResult], bool] | None = None,
    ) -> None:
        if asked_again is not None:
            self._asked_again.update(dict.fromkeys(handlers, asked_again))
        for transaction_type, handler in handlers.items():
            if transaction_type in self._handlers:
                raise ValueError(
                    f"{owner}: transaction_type {transaction_type!r} already has a handler"
                )
            self._handlers[transaction_type] = handler

    def handles(self, result: CommandResult) -> bool:
        return result.transaction_type in self._handlers

    def asked_again(self, result: CommandResult) -> bool:
        """Whether the result's owner sends its command again while the record waits."""
        owner_asks = self._asked_again.get(result.transaction_type)
        return owner_asks is not None and owner_asks(result)

    async def dispatch(self, result: CommandResult) -> None:
        handler = self._handlers.get(result.transaction_type)
        if handler is not None:
            await handler(result)


class ResultsConsumer(WalletResultsConsumer):
    """Consumer group on wallet.results: each result goes to the feature that handles its
    transaction_type; results no feature handles are skipped."""

    def __init__(
        self, bootstrap_servers: str, dispatcher: ResultsDispatcher, **options: Any
    ) -> None:
        super().__init__(
            bootstrap_servers,
            dispatcher.dispatch,
            dispatcher.handles,
            asked_again=dispatcher.asked_again,
            **options,
        )
