"""Publishes a batch's outcomes through FastStream publishers, all in flight at once.

The publishers are declared with their message schemas, so the AsyncAPI document of the wallet
describes what it sends on each topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from faststream.kafka import KafkaBroker

from shared.messaging import CommandResult, DeadLetter, LedgerTransaction, encode
from shared.messaging.topics import Topics


class KafkaOutcomePublisher:
    def __init__(self, broker: KafkaBroker, topics: Topics) -> None:
        self._results = broker.publisher(
            topics.results,
            schema=CommandResult,
            title="wallet-results",
            description="The outcome of every command delivery: applied, duplicate or rejected.",
        )
        self._events = broker.publisher(
            topics.events,
            schema=LedgerTransaction,
            title="wallet-events",
            description="Applied ledger transactions (at-least-once; dedupe by transaction_id).",
        )
        self._dead_letters = broker.publisher(
            topics.dead_letters,
            schema=DeadLetter,
            title="wallet-commands-dlq",
            description="Messages that are not valid commands, with the reason and source offset.",
        )

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
            pending.append(
                await self._dead_letters.publish(encode(dead_letter), key=key, no_confirm=True)
            )
        for user_id, result in results:
            pending.append(
                await self._results.publish(encode(result), key=user_id.encode(), no_confirm=True)
            )
        for event in events:
            pending.append(
                await self._events.publish(
                    encode(event), key=event.user_id.encode(), no_confirm=True
                )
            )
        await asyncio.gather(*pending)
