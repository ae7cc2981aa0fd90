"""Publishes a batch's outcomes through the FastStream broker, all in flight at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from faststream.kafka import KafkaBroker

from shared.messaging import CommandResult, DeadLetter, LedgerTransaction, encode
from shared.messaging.topics import Topics


class KafkaOutcomePublisher:
    def __init__(self, broker: KafkaBroker, topics: Topics) -> None:
        self._broker = broker
        self._topics = topics

    async def publish(
        self,
        results: Sequence[tuple[str, CommandResult]],
        events: Sequence[LedgerTransaction],
        dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
    ) -> None:
        # Enqueue everything without waiting (the producer batches per partition), then wait for
        # every acknowledgement: offsets are committed only after all of it is on the broker.
        pending: list[Awaitable[Any]] = []
        for key, dead_letter in dead_letters:
            pending.append(await self._send(self._topics.dead_letters, encode(dead_letter), key))
        for user_id, result in results:
            pending.append(await self._send(self._topics.results, encode(result), user_id.encode()))
        for event in events:
            pending.append(
                await self._send(self._topics.events, encode(event), event.user_id.encode())
            )
        await asyncio.gather(*pending)

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> Awaitable[Any]:
        return await self._broker.publish(value, topic, key=key, no_confirm=True)
