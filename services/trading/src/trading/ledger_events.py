"""A consumer group on `wallet.events`: every ledger transaction, in order per partition, at
least once, handed to one handler (savings history, referral commissions — each its own group).

`caught_up` lets a job wait until everything the ledger had published when it was asked has
been handled (by whichever member of the group owns each partition).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import ValidationError

from shared.messaging import LedgerTransaction
from shared.results_consumer import GroupConsumer

log = structlog.get_logger(__name__)

TransactionHandler = Callable[[LedgerTransaction], Awaitable[None]]


class LedgerEventsConsumer(GroupConsumer[LedgerTransaction]):
    def __init__(self, bootstrap_servers: str, handle: TransactionHandler, **options: Any) -> None:
        # A new group reads the ledger's whole published history: that IS the derivation.
        super().__init__(bootstrap_servers, **options)
        self._handler = handle

    def _read(self, value: bytes | None) -> LedgerTransaction | None:
        if value is None:
            return None
        try:
            return LedgerTransaction.model_validate_json(value)
        except ValidationError:
            log.warning("ledger_events.unreadable", value=value[:200])
            return None

    async def _handle(self, message: LedgerTransaction) -> None:
        await self._handler(message)
