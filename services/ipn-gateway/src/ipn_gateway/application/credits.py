"""Deposit credits the wallet has not answered, sent again: the payments' ask-again pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import structlog

from ipn_gateway.application.ports import CommandPublisher, Payments
from ipn_gateway.application.records import Payment
from shared.outbox import sendable
from shared.paging import PageCursor

log = structlog.get_logger(__name__)

ASK_AGAIN_PAGE: Final = 200
_UNSENDABLE: Final = "payment.credit_unsendable"


@dataclass
class UnansweredCredits:
    """Sends again each published credit the wallet has not answered `ask_again_after` after it
    was recorded, at most once per `ask_again_after` per payment.

    The wallet answers a resend with the first outcome (a `duplicate` carrying it), so a result
    lost or dead-lettered on its way here is recorded after all; and a credit the wallet failed on
    without recording an outcome (`processing_failed`, which is not final) is applied by a later
    try, once whatever failed is fixed, instead of the deposit staying uncredited. A credit the
    wallet fails on every time is sent once per period, logged each time
    (`payment.credit_asked_again`), for a person to see. A credit never published is the outbox
    relay's to send.

    A pass takes at most `page` payments, oldest first, the next pass going on after them. A
    credit that cannot be built from what is stored is logged (`payment.credit_unsendable`) and
    left; the payment's other credits are still sent.
    """

    payments: Payments
    publisher: CommandPublisher
    clock: Callable[[], datetime]
    ask_again_after: timedelta = timedelta(seconds=60)
    page: int = ASK_AGAIN_PAGE
    # Where the next pass goes on, by (created_at, payment_id).
    _cursor: PageCursor[Payment] = field(
        default_factory=lambda: PageCursor(
            lambda p: (p.created_at, p.state.payment_id) if p.created_at else None
        ),
        init=False,
    )

    async def ask_again(self) -> int:
        asked = 0
        unanswered_since = self.clock() - self.ask_again_after
        found = await self.payments.awaiting_wallet(
            unanswered_since, self.page, after=self._cursor.after
        )
        self._cursor.advance(found, self.page)
        for payment in found:
            payment_id = payment.state.payment_id
            for entry in payment.outbox:
                if not (
                    entry.published
                    and entry.result_status is None
                    and entry.created_at < unanswered_since
                ):
                    continue
                command = sendable(entry, _UNSENDABLE, payment_id=payment_id)
                if command is None:
                    continue
                await self.publisher.publish(command)
                log.warning(
                    "payment.credit_asked_again",
                    payment_id=payment_id,
                    reference=command.reference_id,
                    command_id=command.command_id,
                )
                asked += 1
            await self.payments.mark_asked(payment_id, self.clock())
        return asked
