"""The outbox relay and the results dispatcher: the background halves of exactly-once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from ipn_gateway.application.ports import CommandPublisher, Payments
from ipn_gateway.application.withdrawals import WithdrawalHandler
from shared.messaging import CommandResult
from shared.outbox import OUTBOX_PAGE, Outbox, OutboxRelayPass

log = structlog.get_logger(__name__)


@dataclass
class OutboxRelay:
    """Publishes recorded commands that were never marked published (the gateway stopped, or
    the broker was away). Resending is safe: the wallet applies each reference once. Each
    outbox's pass takes its owners oldest first, `page` at a time, the next pass going on after
    them; a command that cannot be built from what is stored is logged
    (`outbox.command_unsendable`) and left, and the others still go (`shared.outbox`)."""

    outboxes: Sequence[Outbox]
    publisher: CommandPublisher
    clock: Callable[[], datetime]
    # Younger entries are probably being published by the request that wrote them.
    grace: timedelta = timedelta(seconds=10)
    # Owners (payments, withdrawals, review items) a pass takes from each outbox.
    page: int = OUTBOX_PAGE
    _passes: list[OutboxRelayPass] = field(init=False)

    def __post_init__(self) -> None:
        self._passes = [OutboxRelayPass(outbox, "owner", self.page) for outbox in self.outboxes]

    async def run_once(self, *, grace: timedelta | None = None) -> int:
        cutoff = self.clock() - (self.grace if grace is None else grace)
        sent = 0
        for outbox in self._passes:
            sent += await outbox.run(self.publisher, cutoff)
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
