"""The outbox relay: publishes recorded commands a crash or a broker outage left unpublished, and
asks the wallet again about trades whose answer never came (a result lost or dead-lettered)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import structlog

from p2p.application.ports import CommandPublisher, Trade, Trades
from shared.messaging.outcomes import UNRECORDED_REFUSAL
from shared.outbox import OUTBOX_PAGE, OutboxRelayPass, sendable
from shared.paging import PageCursor

log = structlog.get_logger(__name__)

# Trades an ask-again pass takes (the next pass goes on after them).
ASK_AGAIN_PAGE: Final = 200


@dataclass
class OutboxRelay:
    """Resending is safe: the wallet applies each (type, transaction_type, reference) once and
    answers a resend with the first outcome."""

    trades: Trades
    publisher: CommandPublisher
    clock: Callable[[], datetime]
    # Younger entries are probably being published by the request that wrote them.
    grace: timedelta = timedelta(seconds=5)
    # A trade waiting on the wallet this long without moving has its last command sent again.
    ask_again_after: timedelta = timedelta(seconds=60)
    ask_again_page: int = ASK_AGAIN_PAGE
    # Trades an outbox pass takes (the next pass goes on after them).
    outbox_page: int = OUTBOX_PAGE
    # Where the next ask-again pass goes on, by (updated_at, trade_id).
    _ask_again_cursor: PageCursor[Trade] = field(
        default_factory=lambda: PageCursor(lambda trade: (trade.updated_at, trade.trade_id)),
        init=False,
    )

    # The passes over the trades' outbox: trades oldest first, a page per pass.
    _outbox: OutboxRelayPass = field(init=False)

    def __post_init__(self) -> None:
        self._outbox = OutboxRelayPass(self.trades, "trade_id", self.outbox_page)

    async def run_once(self, *, grace: timedelta | None = None) -> int:
        """Publish the commands recorded before the grace and never marked published; the number
        sent. A pass takes the trades oldest first, `outbox_page` at a time, the next going on
        after them; a command that cannot be built from what is stored is logged
        (`outbox.command_unsendable`) and left, and the others still go (`shared.outbox`)."""
        cutoff = self.clock() - (self.grace if grace is None else grace)
        return await self._outbox.run(self.publisher, cutoff)

    async def ask_again(self) -> int:
        """Send again the command each trade in flight has waited on for `ask_again_after`.

        The wallet answers a resend with the first outcome (a `duplicate` carrying it), so a
        result that was lost or dead-lettered on the way back moves the trade after all. A trade
        whose command the wallet refused (noted `<type>_rejected`) waits for ops instead: asking
        again would only repeat the refusal. Not one noted refused with `processing_failed` (as
        earlier versions noted that answer): the wallet recorded no outcome, so it is asked again
        like any other. Run every `ask_again_after`, so a trade is asked at
        most once per period. A pass takes at most `ask_again_page` trades, unmoved the longest
        first, and the next pass goes on after them: however many refused trades wait for ops
        (they stay in flight, unmoved), every other trade gets its turn. A trade whose command
        cannot be built from what is stored (a value the command model now refuses) is logged
        (`trade.command_unsendable`) and left as it is, and the others are still asked.
        """
        asked = 0
        unmoved_since = self.clock() - self.ask_again_after
        page = await self.trades.awaiting_wallet(
            unmoved_since, self.ask_again_page, after=self._ask_again_cursor.after
        )
        self._ask_again_cursor.advance(page, self.ask_again_page)
        for trade in page:
            if not trade.outbox or not trade.outbox[-1].published:
                continue  # never sent: run_once sends it
            last = trade.outbox[-1]
            if any(_refused(note, last.type) for note in trade.notes):
                continue
            command = sendable(last, "trade.command_unsendable", trade_id=trade.trade_id)
            if command is None:
                continue
            await self.publisher.publish(command)
            log.warning("outbox.asked_again", trade_id=trade.trade_id, type=command.type)
            asked += 1
        return asked


def _refused(note: str, command_type: str | None) -> bool:
    """Whether `note` records the wallet's refusal of the trade's `command_type` command for
    good (a `processing_failed` answer, noted so by earlier versions, is not one)."""
    prefix = f"{command_type}_rejected"
    return note.startswith(prefix) and note != f"{prefix}: {UNRECORDED_REFUSAL}"
