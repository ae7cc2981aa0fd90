"""Consumer groups of the services: `GroupConsumer` (one topic, messages handled in order per
partition) and `WalletResultsConsumer` (a service's states follow `wallet.results`).

Offsets are committed only after the messages of a batch are handled, so a crash replays them;
handling must be idempotent (applying a result is a conditional update), so a replay changes
nothing. A message whose handling fails is retried while the database is away. Given somewhere
to keep them (`dead_letters`), a message that keeps failing for another reason is dead-lettered
(kept for a person) after `max_attempts` instead of blocking every message behind it; without,
it is retried until it goes through. While one message is retried for longer than
`stuck_after_seconds` the consumer reports itself `stuck` (for the health check).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure

from shared.messaging import CommandResult

log = structlog.get_logger(__name__)

RETRY_DELAY_SECONDS: Final = 1.0


class DeadLetters(Protocol):
    async def add(self, raw: bytes, reason: str, now: datetime) -> None:
        """Keep a message the service could not handle, for a person to look at."""
        ...


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.joined = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.joined.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Joined even with no partition: with more instances than partitions some get none.
        self.joined.set()


class GroupConsumer[M](abc.ABC):
    """A consumer group on one topic: each message read (`_read`) and handled (`_handle`) in
    order per partition; offsets committed only after a batch is handled."""

    # The prefix of the consumer's log events ("results.apply_failed", "consumer.behind").
    log_events = "consumer"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str,
        group_id: str,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
        poll_timeout_ms: int = 500,
        dead_letters: DeadLetters | None = None,
        max_attempts: int = 5,
        retry_delay_seconds: float = RETRY_DELAY_SECONDS,
        stuck_after_seconds: float = 60.0,
    ) -> None:
        self._topic = topic
        self._group_id = group_id
        self._poll_timeout_ms = poll_timeout_ms
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay_seconds
        self._stuck_after = stuck_after_seconds
        # When the message now being handled first failed (monotonic seconds); None: not failing.
        self._failing_since: float | None = None
        self.dead_lettered = 0
        self._assignment = _Assignment()
        self._options = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            # A new group starts at the beginning: what was published while the service was
            # down (or before the group existed) is still handled.
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @abc.abstractmethod
    def _read(self, value: bytes | None) -> M | None:
        """The message to handle, or None to skip it (unreadable, or not ours)."""

    @abc.abstractmethod
    async def _handle(self, message: M) -> None: ...

    def _describe(self, message: M) -> dict[str, Any]:
        """What the log events of a failing message say about it."""
        return {"group": self._group_id}

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def assigned(self) -> bool:
        """Joined the group and still consuming (a dead loop must fail the health check)."""
        running = self._task is not None and not self._task.done()
        return running and self._assignment.joined.is_set()

    @property
    def stuck(self) -> bool:
        """One message has been failing for longer than `stuck_after_seconds`."""
        since = self._failing_since
        return since is not None and time.monotonic() - since > self._stuck_after

    async def wait_assigned(self, within: float) -> None:
        await asyncio.wait_for(self._assignment.joined.wait(), within)

    async def start(self) -> None:
        # Made here, not in __init__: aiokafka binds to the running event loop.
        self._consumer = AIOKafkaConsumer(**self._options)
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=self._assignment)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._group_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    async def caught_up(self, within: float) -> bool:
        """True once the group has handled (committed) every message published before this
        call, on every partition, whichever member owns it; False if not within `within` s."""
        consumer = self._consumer
        if consumer is None:
            return False
        await consumer.topics()  # refreshes the cluster's metadata
        partitions = [
            TopicPartition(self._topic, p)
            for p in sorted(consumer.partitions_for_topic(self._topic) or ())
        ]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        deadline = time.monotonic() + within
        while True:
            behind = []
            for tp in partitions:
                committed = await consumer.committed(tp) if ends[tp] else None
                if ends[tp] and (committed is None or committed < ends[tp]):
                    behind.append(tp.partition)
            if not behind:
                return True
            if time.monotonic() >= deadline:
                log.warning(f"{self.log_events}.behind", group=self._group_id, partitions=behind)
                return False
            await asyncio.sleep(0.2)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=200
            )
            for records in batches.values():
                for record in records:
                    message = self._read(record.value)
                    if message is not None:
                        await self.apply(message, record.value or b"")
            if batches:
                try:
                    await self._consumer.commit()
                except CommitFailedError:
                    # A rebalance took the partitions away; their next owner re-reads these
                    # messages, and handling them again changes nothing.
                    log.warning(
                        f"{self.log_events}.commit_failed_after_rebalance", group=self._group_id
                    )

    async def apply(self, message: M, raw: bytes) -> None:
        """Handle one message: retried while the database is away (skipping it would leave an
        object behind for ever), dead-lettered after `max_attempts` failures of any other kind
        when there are `dead_letters`, retried until it goes through when there are none."""
        attempts = 0
        try:
            while True:
                try:
                    await self._handle(message)
                    return
                except Exception as error:
                    attempts += 1
                    if self._failing_since is None:
                        self._failing_since = time.monotonic()
                    log.exception(
                        f"{self.log_events}.apply_failed",
                        attempt=attempts,
                        **self._describe(message),
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
        if self._dead_letters is None:
            return False
        try:
            await self._dead_letters.add(raw, reason[:500], datetime.now(UTC))
        except Exception:
            log.exception(f"{self.log_events}.dead_letter_failed")
            return False
        self.dead_lettered += 1
        log.error(f"{self.log_events}.dead_lettered", reason=reason[:200], value=raw[:200])
        return True


class WalletResultsConsumer(GroupConsumer[CommandResult]):
    """A consumer group on `wallet.results`: `wanted` picks the service's own results (by
    reference or transaction type), the rest are skipped; `dispatch` applies one."""

    log_events = "results"

    def __init__(
        self,
        bootstrap_servers: str,
        dispatch: Callable[[CommandResult], Awaitable[object]],
        wanted: Callable[[CommandResult], bool],
        *,
        asked_again: Callable[[CommandResult], bool] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(bootstrap_servers, **options)
        self._dispatch = dispatch
        self._wanted = wanted
        # The results whose records the service asks the wallet again about while they wait (a
        # pass that resends the same command): a not-final answer to one is skipped. Any other
        # is dispatched as the refusal it says, recorded where a person sees it.
        self._asked_again = asked_again

    def _read(self, value: bytes | None) -> CommandResult | None:
        if value is None:
            return None
        try:
            result = CommandResult.model_validate_json(value)
        except ValidationError:
            log.warning("results.unreadable", value=value[:200])
            return None
        if not self._wanted(result):
            return None
        if not result.final and self._asked_again is not None and self._asked_again(result):
            # No outcome for good (the wallet recorded none): the record stays as it is, and
            # the service asks again with the same command, which may still be applied.
            log.warning(
                "results.not_final",
                reference=result.reference_id[:120],
                command_id=result.command_id[:120],
                reason=result.reason,
                detail=(result.detail or "")[:200],
            )
            return None
        return result

    async def _handle(self, message: CommandResult) -> None:
        await self._dispatch(message)

    def _describe(self, message: CommandResult) -> dict[str, Any]:
        return {"reference": message.reference_id}
