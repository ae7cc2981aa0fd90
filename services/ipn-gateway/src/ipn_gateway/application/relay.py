"""The outbox relay and the results dispatcher: the background halves of exactly-once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from ipn_gateway.application.ports import CommandPublisher, Payments
from ipn_gateway.application.withdrawals import WithdrawalHandler
from shared.messaging import CommandResult, WalletCommand

log = structlog.get_logger(__name__)


class Outbox(Protocol):
    async def unpublished(self, older_than: datetime) -> Sequence[tuple[str, WalletCommand]]: ...
    async def mark_published(self, owner_id: str, command_id: str) -> None: ...


@dataclass
class OutboxRelay:
    """Publishes recorded commands that were never marked published (the gateway stopped, or
    the broker was away). Resending is safe: the wallet applies each reference once."""

    outboxes: Sequence[Outbox]
    publisher: CommandPublisher
    clock: Callable[[], datetime]
    # Younger entries are probably being published by the request that wrote them.
    grace: timedelta = timedelta(seconds=10)

    async def run_once(self, *, grace: timedelta | None = None) -> int:
        cutoff = self.clock() - (self.grace if grace is None else grace)
        sent = 0
        for outbox in self.outboxes:
            for owner_id, command in await outbox.unpublished(cutoff):
                await self.publisher.publish(command)
                await outbox.mark_published(owner_id, command.command_id)
                log.info("outbox.republished", owner=owner_id, reference=command.reference_id)
                sent += 1
        return sent


@dataclass
class ResultsDispatcher:
    """Routes the wallet's results to the withdrawal or payment they answer; ignores others."""

    withdrawals: WithdrawalHandler
    payments: Payments

    async def dispatch(self, result: CommandResult) -> None:
        if result.reference_id.startswith("withdrawal:"):
            await self.withdrawals.apply_result(result)
        elif result.reference_id.startswith("nowpayments:"):
            await self.payments.record_result(result)
