"""The consumer of `wallet.results` (group `ipn-gateway`): withdrawal states follow the wallet.

Offsets are committed only after the results of a batch are applied, so a crash replays them;
applying a result is a conditional update, so a replay changes nothing. A result that keeps
failing for another reason than the database being away is dead-lettered (kept for a person)
after a few attempts instead of blocking every result behind it; while one result is retried
for longer than `stuck_after_seconds` the consumer reports itself stuck (/healthz answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure

from ipn_gateway.application.ports import DeadLetters
from shared.messaging import CommandResult

log = structlog.get_logger(__name__)

RETRY_DELAY_SECONDS: Final = 1.0
OUR_REFERENCES: Final = ("withdrawal:", "nowpayments:")


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.joined = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.joined.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Joined even with no partition: with more gateways than partitions some get none.
        self.joined.set()


class ResultsConsumer:
    def __init__(
        self,
        bootstrap_servers: str,
        dispatch: Callable[[CommandResult], Awaitable[None]],
        *,
        topic: str,
        group_id: str,
        dead_letters: DeadLetters,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
        max_attempts: int = 5,
        retry_delay_seconds: float = RETRY_DELAY_SECONDS,
        stuck_after_seconds: float = 60.0,
    ) -> None:
        self._dispatch = dispatch
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay_seconds
        self._stuck_after = stuck_after_seconds
        # When the result now being applied first failed (monotonic seconds); None: not failing.
        self._failing_since: float | None = None
        self.dead_lettered = 0
        self._topic = topic
        self._assignment = _Assignment()
        self._options = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            # A new group starts at the beginning: results published before it first joined
            # (the gateway was down) still move their withdrawals.
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

    @property
    def stuck(self) -> bool:
        """One result has been failing for longer than `stuck_after_seconds`."""
        since = self._failing_since
        return since is not None and time.monotonic() - since > self._stuck_after

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
                    result = _ours(record.value)
                    if result is not None:
                        await self.apply(result, record.value or b"")
            if batches:
                try:
                    await self._consumer.commit()
                except CommitFailedError:
                    # A rebalance took the partitions away; their next owner re-reads these
                    # results, and applying them again changes nothing.
                    log.warning("results.commit_failed_after_rebalance")

    async def apply(self, result: CommandResult, raw: bytes) -> None:
        """Apply one result: retried while the database is away, dead-lettered after
        `max_attempts` failures of any other kind."""
        attempts = 0
        try:
            while True:
                try:
                    await self._dispatch(result)
                    return
                except Exception as error:
                    attempts += 1
                    if self._failing_since is None:
                        self._failing_since = time.monotonic()
                    log.exception(
                        "results.apply_failed", reference=result.reference_id, attempt=attempts
                    )
                    poison = not isinstance(error, ConnectionFailure)
                    if (
                        poison
                        and attempts >= self._max_attempts
                        and await self._dead_letter(raw, f"{type(error).__name__}: {error}")
                    ):
                        return
                    await asyncio.sleep(self._retry_delay)
        finally:
            self._failing_since = None

    async def _dead_letter(self, raw: bytes, reason: str) -> bool:
        try:
            await self._dead_letters.add(raw, reason[:500], datetime.now(UTC))
        except Exception:
            log.exception("results.dead_letter_failed")
            return False
        self.dead_lettered += 1
        log.error("results.dead_lettered", reason=reason[:200], value=raw[:200])
        return True


def _ours(value: bytes | None) -> CommandResult | None:
    if value is None:
        return None
    try:
        result = CommandResult.model_validate_json(value)
    except ValidationError:
        log.warning("results.unreadable", value=value[:200])
        return None
    return result if result.reference_id.startswith(OUR_REFERENCES) else None
