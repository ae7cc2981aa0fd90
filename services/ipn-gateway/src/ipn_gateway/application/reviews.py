"""The review queue: IPNs and payments held for a person, who approves (credit once) or dismisses.

Approving a payment's item goes through that payment's document (a conditional update on its
version, with the credit in its outbox and the item's id in `approved_reviews`) before the item is
closed: a crash in between is finished by approving again, which then credits nothing more.
An item whose IPN named another payment than its order's is credited from the item's own document,
under `nowpayments:<payment_id>`, so the wallet takes at most one credit for that payment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import structlog

from ipn_gateway.application.ipn import (
    MAX_SAVE_ATTEMPTS,
    credit_command,
    publish_recorded,
    save_payment,
)
from ipn_gateway.application.ports import CommandPublisher, Payments, Reviews
from ipn_gateway.application.records import OutboxEntry, ReviewItem, ReviewStatus
from ipn_gateway.domain.errors import Conflict, Forbidden, GatewayError, NotFound
from ipn_gateway.domain.payments import Credit, PaymentState, approve_review, credit_reference

log = structlog.get_logger(__name__)

LIST_LIMIT: Final = 200
MAX_NOTE_LENGTH: Final = 500


@dataclass
class ReviewHandler:
    reviews: Reviews
    payments: Payments
    publisher: CommandPublisher
    clock: Callable[[], datetime]

    async def list(self, status: ReviewStatus | None) -> Sequence[ReviewItem]:
        return await self.reviews.list(status, LIST_LIMIT)

    async def approve(self, admin_id: str, review_id: str) -> ReviewItem:
        item = await self._open(review_id)
        if item.user_id == admin_id:
            raise Forbidden("self_approval_forbidden", "an admin cannot approve their own deposit")
        if item.currency is None or item.cumulative is None or item.user_id is None:
            raise Conflict("nothing_to_credit", "this item has no amount the ledger can credit")
        entry = None
        if item.bound:
            await self._credit_payment(item)
        else:
            credit = Credit(
                currency=item.currency,
                amount=item.cumulative,
                cumulative=item.cumulative,
                reference_id=credit_reference(item.payment_id, item.cumulative, first=True),
            )
            entry = self._entry(item, credit)
        closed = await self.reviews.close(
            review_id, "approved", admin_id, None, entry, self.clock()
        )
        if closed is None:
            raise Conflict("review_closed", "another admin closed this item meanwhile")
        if entry is not None:
            mark = functools.partial(self.reviews.mark_published, review_id)
            await publish_recorded(self.publisher, entry, mark)
        log.info("review.approved", review_id=review_id, admin=admin_id)
        return closed

    async def dismiss(self, admin_id: str, review_id: str, note: str) -> ReviewItem:
        note = note.strip()
        if not note or len(note) > MAX_NOTE_LENGTH:
            raise GatewayError(
                "invalid_reason", f"a reason of 1 to {MAX_NOTE_LENGTH} characters is required"
            )
        await self._open(review_id)
        closed = await self.reviews.close(
            review_id, "dismissed", admin_id, note, None, self.clock()
        )
        if closed is None:
            raise Conflict("review_closed", "another admin closed this item meanwhile")
        return closed

    async def _open(self, review_id: str) -> ReviewItem:
        item = await self.reviews.get(review_id)
        if item is None:
            raise NotFound("review_not_found", f"no review item {review_id[:64]!r}")
        if item.status != "open":
            raise Conflict("review_closed", f"this item is already {item.status}")
        return item

    async def _credit_payment(self, item: ReviewItem) -> None:
        assert item.currency is not None
        assert item.cumulative is not None
        assert item.user_id is not None
        for _ in range(MAX_SAVE_ATTEMPTS):
            stored = await self.payments.get(item.payment_id)
            state = stored.state if stored else PaymentState(payment_id=item.payment_id)
            decision = approve_review(state, item.review_id, item.currency, item.cumulative)
            if decision.state is None:
                return  # approved on the payment already (a crash before the item was closed)
            if decision.verdict == "ignored":
                raise Conflict(
                    "outcome_currency_changed",
                    f"the payment was credited in {state.credit_currency}, not {item.currency}",
                )
            entry = self._entry(item, decision.credit) if decision.credit else None
            saved = await save_payment(
                self.payments,
                self.publisher,
                stored,
                decision.state,
                order=(item.order_id, item.user_id),
                credit=entry,
                review=None,
                now=self.clock(),
            )
            if saved:
                return
        raise Conflict("busy", "the payment is being updated; try again")

    def _entry(self, item: ReviewItem, credit: Credit) -> OutboxEntry:
        assert item.user_id is not None
        metadata = {"review_id": item.review_id, "review_reason": item.reason}
        command = credit_command(credit, item.user_id, item.order_id, item.payment_id, metadata)
        now = self.clock()
        return OutboxEntry(command.model_copy(update={"issued_at": now}), created_at=now)
