"""Missed webhooks: ask NOWPayments about deposits that stay open too long, and apply its answer
through the same rules as an IPN (bound to the order's payment, decided, credited once).

A re-deposit to an order's address is a repeat payment of its own (its `parent_payment_id` is the
order's payment): once an IPN has stored it, it is asked about in the same way, on its own, so
that a repeat payment whose later IPNs were lost is still credited after the order was closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog

from ipn_gateway.application.ipn import IpnHandler
from ipn_gateway.application.ports import DepositOrders, PaymentProvider
from ipn_gateway.application.records import DepositOrder, IpnRecord, Payment
from ipn_gateway.domain.errors import GatewayError
from ipn_gateway.domain.js_json import js_stringify, with_javascript_numbers
from ipn_gateway.domain.payments import OPEN_STATUSES, PaymentState, read_ipn
from shared.messaging import unsendable_reason
from shared.paging import PageCursor, Position

log = structlog.get_logger(__name__)


@dataclass
class MissedIpnPoller:
    orders: DepositOrders
    provider: PaymentProvider
    ipn: IpnHandler
    clock: Callable[[], datetime]
    # A deposit younger than this is left to its IPNs; an open one is asked about every `every`.
    older_than: timedelta = timedelta(minutes=30)
    every: timedelta = timedelta(minutes=10)
    batch: int = 50
    # NOWPayments expires an unpaid payment within days; after this the order is left alone,
    # whether or not NOWPayments answered the last question.
    give_up_after: timedelta = timedelta(days=14)
    # Where the next pass goes on, in the orders and in the repeat payments.
    _orders_cursor: PageCursor[DepositOrder] = field(
        default_factory=lambda: PageCursor(lambda order: (order.created_at, order.order_id)),
        init=False,
    )
    _repeats_cursor: PageCursor[Payment] = field(
        default_factory=lambda: PageCursor(_repeat_position), init=False
    )

    async def run_once(self) -> int:
        """Poll the due deposits, then the due repeat payments, once; how many NOWPayments
        answered. A pass takes at most `batch` of each, oldest first, and the next pass goes on
        after them: however many are due (each due again `every` after it was asked), each gets
        its turn, not only the oldest `batch`."""
        now = self.clock()
        created_before, polled_before = now - self.older_than, now - self.every
        answered = 0
        due = await self.orders.open_older_than(
            created_before, polled_before, self.batch, after=self._orders_cursor.after
        )
        self._orders_cursor.advance(due, self.batch)
        for order in due:
            assert order.payment is not None
            asked, closed = await self._poll(
                order.payment.payment_id, order.created_at, now, order_id=order.order_id
            )
            answered += asked
            await self.orders.mark_polled(order.order_id, now, closed=closed)
        # Their own query: closing an order does not stop the polling of its repeat payments.
        payments = self.ipn.payments
        repeats = await payments.open_repeats_older_than(
            created_before, polled_before, self.batch, after=self._repeats_cursor.after
        )
        self._repeats_cursor.advance(repeats, self.batch)
        for repeat in repeats:
            payment_id = repeat.state.payment_id
            assert repeat.created_at is not None
            asked, closed = await self._poll(
                payment_id, repeat.created_at, now, order_id=repeat.order_id
            )
            answered += asked
            await payments.mark_polled(payment_id, now, closed=closed)
        return answered

    async def _poll(
        self, payment_id: str, created_at: datetime, now: datetime, *, order_id: str
    ) -> tuple[bool, bool]:
        """Ask NOWPayments about one payment and apply the answer as an IPN: whether it answered,
        and whether the payment is to be asked about no more (it ended, or it is too old)."""
        known = await self.ipn.payments.get(payment_id)
        if known is not None and _ended(known.state):
            # Its IPNs already ended it: nothing to ask NOWPayments.
            return False, True
        try:
            body = await self.provider.payment_status(payment_id)
            ipn = read_ipn(with_javascript_numbers(body), order_id)
            if (
                ipn.parent_payment_id is None
                and known is not None
                and known.parent_payment_id is not None
                and ipn.payment_id == payment_id
            ):
                # The payment's own status answer need not name its parent: the link to the
                # order is the one stored when its first IPN arrived, not a guess from this text.
                ipn = replace(ipn, parent_payment_id=known.parent_payment_id)
            verdict, review = await self.ipn.apply(ipn)
        except GatewayError as error:
            # An answer that keeps failing (NOWPayments away, a body it keeps getting wrong) ends
            # the polling at the same age as any other: loudly, since nothing was learnt.
            too_old = created_at < now - self.give_up_after
            report = log.error if too_old else log.warning
            event = "poll.given_up" if too_old else "poll.failed"
            report(event, order_id=order_id, payment_id=payment_id, code=error.code)
            return False, too_old
        except ValueError as error:
            # The answer's credit cannot be built from what is stored (a user id an earlier
            # version took that no wallet command can carry): nothing was stored or sent. Asked
            # again at the usual interval, as a failed question, while the others go on.
            log.error(
                "poll.credit_unsendable",
                order_id=order_id,
                payment_id=payment_id,
                reason=unsendable_reason(error),
            )
            return False, created_at < now - self.give_up_after
        await self.ipn.ipn_log.record(
            IpnRecord(
                received_at=now,
                raw_body=js_stringify(body)[:4096],
                raw_body_base64=False,
                body_size=len(js_stringify(body)),
                headers={},
                client_ip=None,
                trusted=True,
                verdict=verdict,
                payment_id=ipn.payment_id,
                payment_status=ipn.status_text,
                order_id=ipn.order_id,
                review_code=review,
                source="poll",
            )
        )
        stored = await self.ipn.payments.get(payment_id)
        closed = (stored is not None and _ended(stored.state)) or (
            created_at < now - self.give_up_after
        )
        log.info(
            "poll.applied", order_id=order_id, payment_id=payment_id, verdict=verdict, closed=closed
        )
        return True, closed


def _ended(state: PaymentState) -> bool:
    """Whether the payment's IPNs ended it: a final status that was decided. A final status whose
    IPN went to review unresolved (`missing_outcome`, say: nothing credited, the status not in
    `seen`) is not an end: NOWPayments is asked again, and its answer may carry what was missing."""
    status = state.status
    return status is not None and status not in OPEN_STATUSES and status.value in state.seen


def _repeat_position(repeat: Payment) -> Position | None:
    # One without `created_at` has no place in the order: the next pass starts from the oldest.
    if repeat.created_at is None:
        return None
    return (repeat.created_at, repeat.state.payment_id)
