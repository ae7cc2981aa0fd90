"""The review queue: IPNs and payments held for a person, who approves (credit once) or dismisses.

Approving an item first claims it (one conditional update, open → approving, recording who decided
and when), so that no other decision can be taken on it once money may move; then credits through
its payment's document (a conditional update on its version, with the credit in its outbox and the
item's id in `approved_reviews`), then moves it to approved. An item left approving (a crash
between these steps, or an approval still under way) is finished by any admin approving it again
(not the depositor), which credits nothing more; it cannot be dismissed. An approval that can
credit nothing (the payment was credited in another currency, or an item of a payment not tied to
its order reports no more than the payment was credited) is refused and the item goes back to open.

The items of a payment not tied to its order (an IPN named another payment than the order's, or
another coin) credit through that payment's document too, created by the first approval if there
is none: it keeps what the approved items credited, so that however many items the payment has,
it is credited in total what it paid, once (`nowpayments:<payment_id>`, then top-ups of the
difference), and an item reporting no more than that is refused (`already_credited`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import structlog

from ipn_gateway.application.ipn import (
    MAX_SAVE_ATTEMPTS,
    credit_command,
    save_payment,
)
from ipn_gateway.application.ports import CommandPublisher, DepositOrders, Payments, Reviews
from ipn_gateway.application.records import OutboxEntry, ReviewItem, ReviewStatus
from ipn_gateway.domain.errors import Conflict, Forbidden, GatewayError, NotFound
from ipn_gateway.domain.payments import (
    ALERT_ONLY,
    ENDED,
    ESTIMATED,
    Credit,
    PaymentState,
    approve_review,
)
from shared.messaging import unsendable_reason

log = structlog.get_logger(__name__)

LIST_LIMIT: Final = 200
MAX_NOTE_LENGTH: Final = 500
ENDED_TEXTS: Final = frozenset(status.value for status in ENDED)
ESTIMATED_TEXTS: Final = frozenset(status.value for status in ESTIMATED)
NOTHING_TO_CREDIT: Final = "this item has no amount the ledger can credit"


@dataclass
class ReviewHandler:
    reviews: Reviews
    payments: Payments
    publisher: CommandPublisher
    clock: Callable[[], datetime]
    orders: DepositOrders

    async def list(self, status: ReviewStatus | None) -> Sequence[ReviewItem]:
        return await self.reviews.list(status, LIST_LIMIT)

    async def approve(self, admin_id: str, review_id: str) -> ReviewItem:
        item = await self._get(review_id)
        if item.status not in ("open", "approving"):
            raise Conflict("review_closed", f"this item is already {item.status}")
        if item.user_id == admin_id:
            raise Forbidden("self_approval_forbidden", "an admin cannot approve their own deposit")
        if (
            # Earlier versions queued these with an amount: an alert's, and a waiting or
            # confirming IPN's estimate (domain.payments.ESTIMATED).
            (item.reason in ALERT_ONLY and item.status == "open")
            or (item.payment_status in ESTIMATED_TEXTS and item.status == "open")
            or item.currency is None
            or item.cumulative is None
            or item.user_id is None
        ):
            raise Conflict("nothing_to_credit", NOTHING_TO_CREDIT)
        approved = await self._approve_payment(admin_id, item)
        log.info(
            "review.approved", review_id=review_id, admin=admin_id, decided_by=approved.decided_by
        )
        return approved

    async def _approve_payment(self, admin_id: str, item: ReviewItem) -> ReviewItem:
        """Claim the item (open → approving) before any money moves, credit through the payment,
        then approving → approved. An item found `approving` (an approval that stopped between
        these steps, or one under way) is finished: the payment credits each review once."""
        review_id = item.review_id
        if item.status == "open":
            claimed = await self.reviews.claim(review_id, admin_id, self.clock())
            if claimed is None:
                raise Conflict("review_closed", "another admin decided this item meanwhile")
        refusal = await self._credit_payment(item, admin_id)
        if refusal is not None:
            # Nothing was or can be credited for this item: it goes back to open, so that it can
            # be dismissed.
            await self.reviews.release(review_id)
            raise refusal
        approved = await self.reviews.finish(review_id)
        if approved is None:
            raise Conflict("review_closed", "another admin approved this item meanwhile")
        return approved

    async def dismiss(self, admin_id: str, review_id: str, note: str) -> ReviewItem:
        note = note.strip()
        if not note or len(note) > MAX_NOTE_LENGTH:
            raise GatewayError(
                "invalid_reason", f"a reason of 1 to {MAX_NOTE_LENGTH} characters is required"
            )
        item = await self._get(review_id)
        if item.status == "approving":
            # Money may be moving for it: only approving it again (which finishes it) is allowed.
            raise Conflict("review_closed", "an admin is approving this item")
        if item.status != "open":
            raise Conflict("review_closed", f"this item is already {item.status}")
        closed = await self.reviews.close(review_id, "dismissed", admin_id, note, self.clock())
        if closed is None:
            raise Conflict("review_closed", "another admin decided this item meanwhile")
        return closed

    async def _get(self, review_id: str) -> ReviewItem:
        item = await self.reviews.get(review_id)
        if item is None:
            raise NotFound("review_not_found", f"no review item {review_id[:64]!r}")
        return item

    async def _credit_payment(self, item: ReviewItem, admin_id: str) -> Conflict | None:
        """Credit the item through its payment's document, or the refusal when nothing can be."""
        assert item.currency is not None
        assert item.cumulative is not None
        assert item.user_id is not None
        # A payment credits one order's user: another order's payment is not this item's to
        # credit, whatever an IPN paired it with (a person must look at that pairing).
        holder = await self.orders.holding(item.payment_id)
        if holder is not None and holder != item.order_id:
            return _another_order(item.payment_id, holder)
        # Refusals the payment's state cannot tell, given to `approve_review`: an approval that
        # already credited (the item left `approving`) is finished whatever they say.
        refused: tuple[str, str] | None = None
        # A payment not tied to its order keeps no state: what its IPNs reported is its items.
        ended = ENDED_TEXTS & await self.reviews.payment_statuses(item.payment_id)
        if item.reason in ALERT_ONLY or item.payment_status in ESTIMATED_TEXTS:
            # an earlier version's alert or estimate, left `approving`
            refused = ("nothing_to_credit", NOTHING_TO_CREDIT)
        elif ended:
            detail = f"the payment is {min(ended)}: nothing of it can be credited; dismiss the item"
            refused = ("payment_ended", detail)
        for _ in range(MAX_SAVE_ATTEMPTS):
            stored = await self.payments.get(item.payment_id)
            if stored is not None and (stored.order_id, stored.user_id) != (
                item.order_id,
                item.user_id,
            ):
                return _another_order(item.payment_id, stored.order_id)
            state = stored.state if stored else PaymentState(payment_id=item.payment_id)
            decision = approve_review(
                state,
                item.review_id,
                item.currency,
                item.cumulative,
                bound=item.bound,
                refused=refused,
            )
            if decision.verdict == "ignored":
                assert decision.review_code is not None
                return Conflict(decision.review_code, decision.review_detail or "")
            if decision.state is None:
                return None  # approved on the payment already (an approval that stopped before)
            try:
                entry = self._entry(item, decision.credit) if decision.credit else None
            except ValueError as error:  # a value an earlier version stored; nothing moved
                log.error(
                    "review.credit_unsendable",
                    review_id=item.review_id,
                    by=admin_id,
                    reason=unsendable_reason(error),
                )
                return Conflict(
                    "review_unsendable",
                    "this item's credit cannot be built from what it holds; dismiss it or have "
                    "an engineer look at it",
                )
            saved = await save_payment(
                self.payments,
                self.publisher,
                stored,
                decision.state,
                # A payment not stored yet is stored with the item's order and user.
                order=(item.order_id, item.user_id),
                credit=entry,
                review=None,
                now=self.clock(),
            )
            if saved:
                return None
        raise Conflict("busy", "the payment is being updated; try again")

    def _entry(self, item: ReviewItem, credit: Credit) -> OutboxEntry:
        assert item.user_id is not None
        metadata = {"review_id": item.review_id, "review_reason": item.reason}
        command = credit_command(credit, item.user_id, item.order_id, item.payment_id, metadata)
        now = self.clock()
        return OutboxEntry(command.model_copy(update={"issued_at": now}), created_at=now)


def _another_order(payment_id: str, order_id: str) -> Conflict:
    return Conflict(
        "payment_of_another_order",
        f"payment {payment_id} belongs to order {order_id}, not this item's",
    )
