"""Referral use cases: bind an invitee, summarise a user's referrals, and pay commissions on
the fees bound invitees pay, as the ledger reports them on wallet.events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import structlog

from shared.messaging import CommandResult, LedgerTransaction, unsendable_reason
from shared.money import format_amount
from shared.paging import PageCursor
from shared.wallet_client import WalletClient
from trading.payout_status import PAID, unsettled
from trading.referrals.application.ports import Bindings, CommissionRecord, Commissions
from trading.referrals.domain.bindings import Binding, already_bound, check_binding
from trading.referrals.domain.commissions import (
    COMMISSION_TRANSACTION_TYPE,
    REFERENCE_PREFIX,
    commissions_due,
    fees_charged,
)

log = structlog.get_logger(__name__)

# Commissions an ask-again pass takes (the next pass goes on after them).
ASK_AGAIN_PAGE: Final = 100

Clock = Callable[[], datetime]


class ReferralService:
    def __init__(
        self,
        *,
        bindings: Bindings,
        commissions: Commissions,
        wallet: WalletClient,
        rate: Decimal,
        clock: Clock,
    ) -> None:
        self._bindings = bindings
        self._commissions = commissions
        self._wallet = wallet
        self._rate = rate
        self._clock = clock
        self.ask_again_page = ASK_AGAIN_PAGE
        # Where the next ask-again pass goes on, by (created_at, reference_id).
        self._ask_again_cursor: PageCursor[CommissionRecord] = PageCursor(
            lambda record: (record["created_at"], record["reference_id"])
        )

    async def bind(self, invitee_id: str, referrer_id: object) -> Binding:
        existing = await self._bindings.insert(invitee_id, check_binding(invitee_id, referrer_id))
        if existing is not None:
            raise already_bound(existing)
        # Read back once stored: `bound_at` is stamped after the binding became visible to the
        # commission consumer, so no fee from that instant on is read without it.
        binding = await self._bindings.of(invitee_id)
        assert binding is not None  # bindings are never deleted
        return binding

    async def summary(self, user_id: str) -> dict[str, Any]:
        mine = await self._bindings.of(user_id)
        earned = await self._commissions.earned_by(user_id)
        return {
            "referrer_id": mine.referrer_id if mine else None,
            "invitees": await self._bindings.invitees_of(user_id),
            "earned": [
                {"currency": currency, "amount": format_amount(earned[currency])}
                for currency in sorted(earned)
            ],
        }

    async def on_ledger_transaction(self, transaction: LedgerTransaction) -> None:
        """Pays the referrers a transaction owes (a handler of wallet.events, at least once)."""
        charges = fees_charged(transaction)
        if not charges:
            return
        bindings = await self._bindings.of_many(c.payer_id for c in charges)
        for due in commissions_due(transaction, bindings.get, self._rate):
            record = await self._commissions.claim(due, self._clock())
            if not unsettled(record["status"], record["reason"]):
                continue  # paid (or refused) the first time this event was read
            try:
                await self._send(record)
            except ValueError as error:
                # Raising would hold this event, and every later one of its partition, for good:
                # it stays pending, and each ask-again pass names it.
                _unsendable(record, error)

    async def ask_again(self, after: timedelta) -> int:
        """Send again the command of each commission still unsettled `after` it was last sent: the
        wallet answers with the first outcome (a `duplicate` carrying it), so a result lost or
        dead-lettered on its way back settles the commission after all; at most once per `after`.
        A refused one is `failed` and not asked again, unless it failed with `processing_failed`
        (recorded so by earlier versions: the wallet recorded no outcome). The number sent.

        A commission whose command cannot be built from what is stored (a value the wallet's
        command refuses) is logged as `referrals.commission_unsendable` and left pending, and the
        others still go. A pass takes at most `ask_again_page` commissions, oldest first, and the
        next pass goes on after them: however many cannot be sent, every other gets its turn."""
        page = await self._commissions.awaiting_wallet(
            self._clock() - after, self.ask_again_page, after=self._ask_again_cursor.after
        )
        self._ask_again_cursor.advance(page, self.ask_again_page)
        sent = 0
        for record in page:
            reference_id = record["reference_id"]
            try:
                await self._send(record)
            except ValueError as error:
                _unsendable(record, error)
                continue
            await self._commissions.mark_asked(reference_id, self._clock())
            log.warning("referrals.commission_asked_again", reference=reference_id)
            sent += 1
        return sent

    async def _send(self, record: CommissionRecord) -> None:
        # The stored figures, not today's: a redelivery or a resend is the very same command.
        await self._wallet.credit(
            user_id=record["referrer_id"],
            currency=record["currency"],
            amount=record["amount"],
            transaction_type=COMMISSION_TRANSACTION_TYPE,
            reference_id=record["reference_id"],
            metadata={
                "referred_user_id": record["referred_user_id"],
                "source_transaction_id": record["source_transaction_id"],
                "source_transaction_type": record["source_transaction_type"],
                "fee": format_amount(record["fee"]),
                "rate": format_amount(record["rate"]),
            },
            wait=False,
        )

    async def on_commission_result(self, result: CommandResult) -> None:
        if not result.reference_id.startswith(REFERENCE_PREFIX):
            return
        record = await self._commissions.get(result.reference_id)
        if record is None or result.type != "credit" or result.user_id != record["referrer_id"]:
            # Not the answer to this commission's credit (another producer's command under its
            # reference, or a refusal echoing a malformed one): it says nothing of the payout.
            log.warning(
                "referrals.foreign_result",
                reference=result.reference_id[:120],
                type=result.type,
                status=result.status,
            )
            return
        outcome = result.original_status if result.status == "duplicate" else result.status
        if outcome == "applied":
            await self._commissions.settle(result.reference_id, PAID, None, self._clock())
        elif outcome == "rejected":
            log.error(
                "referrals.commission_rejected",
                reference=result.reference_id,
                reason=result.reason,
            )
            await self._commissions.settle(
                result.reference_id, "failed", result.reason, self._clock()
            )


def _unsendable(record: CommissionRecord, error: ValueError) -> None:
    log.error(
        "referrals.commission_unsendable",
        reference=record["reference_id"],
        reason=unsendable_reason(error),
    )
