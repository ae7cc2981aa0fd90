"""Missed webhooks: ask NOWPayments about deposits that stay open too long, and apply its answer
through the same rules as an IPN (bound to the order's payment, decided, credited once)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from ipn_gateway.application.ipn import IpnHandler
from ipn_gateway.application.ports import DepositOrders, PaymentProvider
from ipn_gateway.application.records import IpnRecord
from ipn_gateway.domain.errors import GatewayError
from ipn_gateway.domain.js_json import js_stringify, require_canonical_numbers
from ipn_gateway.domain.payments import OPEN_STATUSES, PaymentState, read_ipn

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
    # NOWPayments expires an unpaid payment within days; after this the order is left alone.
    give_up_after: timedelta = timedelta(days=14)

    async def run_once(self) -> int:
        """Poll the due deposits once; how many NOWPayments answered."""
        now = self.clock()
        due = await self.orders.open_older_than(now - self.older_than, now - self.every, self.batch)
        answered = 0
        for order in due:
            assert order.payment is not None
            payment_id = order.payment.payment_id
            known = await self.ipn.payments.get(payment_id)
            if known is not None and _ended(known.state):
                # Its IPNs already ended it: nothing to ask NOWPayments.
                await self.orders.mark_polled(order.order_id, now, closed=True)
                continue
            try:
                body = await self.provider.payment_status(payment_id)
                require_canonical_numbers(body)
                ipn = read_ipn(body)
                verdict, review = await self.ipn.apply(ipn)
            except GatewayError as error:
                log.warning("poll.failed", order_id=order.order_id, code=error.code)
                await self.orders.mark_polled(order.order_id, now, closed=False)
                continue
            answered += 1
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
                order.created_at < now - self.give_up_after
            )
            await self.orders.mark_polled(order.order_id, now, closed=closed)
            log.info("poll.applied", order_id=order.order_id, verdict=verdict, closed=closed)
        return answered


def _ended(state: PaymentState) -> bool:
    """Whether the payment's IPNs ended it: a final status that was decided. A final status whose
    IPN went to review unresolved (`missing_outcome`, say: nothing credited, the status not in
    `seen`) is not an end: NOWPayments is asked again, and its answer may carry what was missing."""
    status = state.status
    return status is not None and status not in OPEN_STATUSES and status.value in state.seen
