"""A consumer of `wallet.results` in a group of its own: a service's states follow the wallet.

Offsets are committed only after the results of a batch are applied, so a crash replays them;
applying a result must be a conditional update, so that a replay changes nothing. `wanted` picks
the service's own results (by reference or transaction type); the rest are skipped unparsed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from pydantic import ValidationError

from shared.messaging import CommandResult

log = structlog.get_logger(__name__)

RETRY_DELAY_SECONDS: Final = 1.0


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.joined = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.joined.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Joined even with no partition: with more instances than partitions some get none.
        self.joined.set()


class WalletResultsConsumer:
    def __init__(
        self,
        bootstrap_servers: str,
        dispatch: Callable[[CommandResult], Awaitable[object]],
        wanted: Callable[[CommandResult], bool],
        *,
        topic: str,
        group_id: str,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
    ) -> None:
        self._dispatch = dispatch
        self._wanted = wanted
        self._topic = topic
        self._assignment = _Assignment()
        self._options = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            # A new group starts at the beginning: results published before it first joined
            # (the service was down) still move its objects.
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def assigned(self) -> bool:
        """Joined the group and still consuming (a dead loop must fail the health check)."""
        running = self._task is not None and not self._task.done()
        return running and self._assignment.joined.is_set()

    async def wait_assigned(self, within: float) -> None:
        await asyncio.wait_for(self._assignment.joined.wait(), within)

    async def start(self) -> None:
        # Made here, not in __init__: aiokafka binds to the running event loop.
        self._consumer = AIOKafkaConsumer(**self._options)
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=self._assignment)
        self._task = asyncio.create_task(self._run(), name="wallet-results-consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=200)
            for records in batches.values():
                for record in records:
                    result = self._read(record.value)
                    if result is not None:
                        await self._apply(result)
            if batches:
                try:
                    await self._consumer.commit()
                except CommitFailedError:
                    # A rebalance took the partitions away; their next owner re-reads these
                    # results, and applying them again changes nothing.
                    log.warning("results.commit_failed_after_rebalance")

    async def _apply(self, result: CommandResult) -> None:
        # A failure here is the database being away: wait and try again rather than skip a
        # result (the object would never move) or crash the consumer.
        while True:
            try:
                await self._dispatch(result)
                return
            except Exception:
                log.exception("results.apply_failed", reference=result.reference_id)
                await asyncio.sleep(RETRY_DELAY_SECONDS)

    def _read(self, value: bytes | None) -> CommandResult | None:
        if value is None:
            return None
        try:
            result = CommandResult.model_validate_json(value)
        except ValidationError:
            log.warning("results.unreadable", value=value[:200])
            return None
        return result if self._wanted(result) else None
