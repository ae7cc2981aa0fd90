"""The outbox relay: publishes recorded commands a crash or a broker outage left unpublished."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from p2p.application.ports import CommandPublisher, Trades

log = structlog.get_logger(__name__)


@dataclass
class OutboxRelay:
    """Resending is safe: the wallet applies each (type, transaction_type, reference) once and
    answers a resend with the first outcome."""

    trades: Trades
    publisher: CommandPublisher
    clock: Callable[[], datetime]
    # Younger entries are probably being published by the request that wrote them.
    grace: timedelta = timedelta(seconds=5)

    async def run_once(self, *, grace: timedelta | None = None) -> int:
        cutoff = self.clock() - (self.grace if grace is None else grace)
        sent = 0
        for trade_id, command in await self.trades.unpublished(cutoff):
            await self.publisher.publish(command)
            await self.trades.mark_published(trade_id, command.command_id)
            log.info("outbox.republished", trade_id=trade_id, type=command.type)
            sent += 1
        return sent
