"""Handling one NOWPayments IPN: verify, bind to its order's payment, decide, credit exactly once.

The missed-webhook poller hands NOWPayments' answers to `apply`, the same rules as a posted IPN.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

import structlog

from ipn_gateway.application.ports import (
    CommandPublisher,
    DepositOrders,
    IpnLog,
    Payments,
    Reviews,
)
from ipn_gateway.application.rate_limit import RateLimiter
from ipn_gateway.application.records import (
    DepositOrder,
    IpnRecord,
    OutboxEntry,
    Payment,
    ReviewItem,
    ReviewNote,
)
from ipn_gateway.domain.errors import Forbidden, GatewayError, IpnRejected
from ipn_gateway.domain.js_json import JsonValue, with_javascript_numbers
from ipn_gateway.domain.payments import (
    DEPOSIT_TRANSACTION_TYPE,
    ConfirmationPolicy,
    Credit,
    Ipn,
    PaymentState,
    Verdict,
    approvable_target,
    binding_problem,
    decide,
    parent_payment_id_of,
    read_ipn,
    review_target,
)
from ipn_gateway.domain.signature import check_text, signed_body
from shared.messaging import CreditCommand
from shared.money import format_amount

log = structlog.get_logger(__name__)

MAX_IPN_BYTES: Final = 64 * 1024
# What is kept of a body whose signature did not match.
MAX_UNTRUSTED_STORED_BYTES: Final = 2 * 1024
# Two IPNs of one payment racing each other: the loser re-reads and decides again.
MAX_SAVE_ATTEMPTS: Final = 8
AUDITED_HEADERS: Final = (
    "x-nowpayments-sig",
    "content-type",
    "content-length",
    "user-agent",
    "x-forwarded-for",
    "x-real-ip",
)

type IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class IpnRequest:
    raw_body: bytes
    signature: str | None
    headers: Mapping[str, str]
    client_ip: str | None
    too_large: bool = False  # the body was cut at MAX_IPN_BYTES + 1 while reading


def review_id_of(ipn: Ipn, code: str, detail: str, target: tuple[str, Decimal] | None) -> str:
    """The same IPN sent again queues no second item; a corrected one queues its own, and so does
    one reporting another amount (`target`: what approving it credits the payment up to; the
    detail of a payment not tied to its order does not name it)."""
    amount = f"{target[0]} {format_amount(target[1])}" if target else ""
    seen = "\x1f".join((ipn.order_id, ipn.payment_id, ipn.status_text, code, detail, amount))
    return "rv_" + hashlib.sha256(seen.encode()).hexdigest()[:24]


def credit_command(
    credit: Credit, user_id: str, order_id: str, payment_id: str, metadata: Mapping[str, str | None]
) -> CreditCommand:
    return CreditCommand(
        user_id=user_id,
        currency=credit.currency,
        amount=credit.amount,
        transaction_type=DEPOSIT_TRANSACTION_TYPE,
        reference_id=credit.reference_id,
        metadata={"order_id": order_id, "payment_id": payment_id, **metadata},
    )


async def save_payment(
    payments: Payments,
    publisher: CommandPublisher,
    stored: Payment | None,
    state: PaymentState,
    *,
    order: tuple[str, str],
    credit: OutboxEntry | None,
    review: ReviewNote | None,
    now: datetime,
    parent_payment_id: str | None = None,
) -> bool:
    """Save the payment's new state over the version read (`stored`), with its credit in the
    outbox, then publish the credit. False when another writer was faster (read and decide again).

    `order` is (order_id, user_id) for a payment not stored yet; a stored one keeps its own.
    `parent_payment_id` marks a repeat payment of the order (the missed-webhook poller asks
    about it too).
    """
    saved = await payments.save(
        state,
        order_id=stored.order_id if stored else order[0],
        user_id=stored.user_id if stored else order[1],
        expected_version=stored.version if stored else None,
        credit=credit,
        review=review,
        now=now,
        parent_payment_id=parent_payment_id,
    )
    if saved and credit is not None:
        await publish_recorded(
            publisher, credit, functools.partial(payments.mark_published, state.payment_id)
        )
    return saved


async def publish_recorded(
    publisher: CommandPublisher, entry: OutboxEntry, mark: Callable[[str], Awaitable[None]]
) -> None:
    """Publish a command already durable in an outbox, then mark it (by command id) published.
    A failure only delays it until the outbox relay publishes it again."""
    try:
        await publisher.publish(entry.build())
        await mark(entry.command_id)
    except Exception:
        log.exception("outbox.publish_deferred", command=entry.command_id)


@dataclass
class IpnHandler:
    secret: str = field(repr=False)  # the HMAC key: never in a repr, so never in a log line
    policy: ConfirmationPolicy
    orders: DepositOrders
    payments: Payments
    ipn_log: IpnLog
    publisher: CommandPublisher
    clock: Callable[[], datetime]
    reviews: Reviews
    allowed_networks: tuple[IpNetwork, ...] = ()  # empty: any sender
    # Unauthenticated posts beyond this are answered 429 and not stored (None: no limit).
    untrusted_limit: RateLimiter | None = None

    async def handle(self, request: IpnRequest) -> Verdict:
        """The verdict for a valid IPN; raises GatewayError (recorded first) for a refused one.

        Only a post refused before its signature matched (too large, from a sender not allowed,
        not signed correctly) is unauthenticated: it counts against `untrusted_limit` and is kept
        cut short. A correctly signed IPN, even one refused after (text that cannot be stored, a
        field missing or odd, a re-deposit whose parent payment no order holds), is never rate
        limited and is kept whole, trusted, with its verdict.
        """
        audit = _audit_base(request, self.clock())
        try:
            body = self._signed(request)
        except GatewayError as error:
            if error.code == "body_too_large":
                log.warning("ipn.too_large", client_ip=request.client_ip, size=audit.body_size)
                raise
            if self.untrusted_limit is not None and not self.untrusted_limit.allow(
                request.client_ip
            ):
                log.warning("ipn.rate_limited", client_ip=request.client_ip, code=error.code)
                raise IpnRejected("rate_limited", "too many refused IPNs; slow down") from None
            await self.ipn_log.record(_untrusted(replace(audit, verdict=error.code)))
            raise
        try:
            ipn = await self._read(body)
            verdict, review = await self.apply(ipn)
        except GatewayError as error:
            await self.ipn_log.record(replace(audit, trusted=True, verdict=error.code))
            raise
        await self.ipn_log.record(
            replace(
                audit,
                trusted=True,
                verdict=verdict,
                payment_id=ipn.payment_id,
                payment_status=ipn.status_text,
                order_id=ipn.order_id,
                review_code=review,
            )
        )
        return verdict

    def _signed(self, request: IpnRequest) -> dict[str, JsonValue]:
        """The body of a post from an allowed sender whose signature matches."""
        if request.too_large or len(request.raw_body) > MAX_IPN_BYTES:
            raise IpnRejected("body_too_large", f"an IPN body is at most {MAX_IPN_BYTES} bytes")
        if not self._sender_allowed(request.client_ip):
            raise Forbidden("ip_not_allowed", "IPN sender address is not on the allow-list")
        return signed_body(request.raw_body, request.signature, self.secret)

    async def _read(self, signed: dict[str, JsonValue]) -> Ipn:
        """The IPN a correctly signed body reports."""
        body = with_javascript_numbers(check_text(signed))
        stored_order_id = None
        parent = parent_payment_id_of(body)
        if body.get("order_id") is None and parent is not None:
            # A re-deposit's IPN may name only its parent payment: its order is the one our
            # records tie that payment to, never one taken from the text.
            stored_order_id = await self.orders.holding(parent)
        return read_ipn(body, stored_order_id)

    async def apply(self, ipn: Ipn) -> tuple[Verdict, str | None]:
        """What a verified IPN (or a polled status) does: the verdict and any review code."""
        order = await self.orders.get(ipn.order_id)
        if order is None:
            log.warning("ipn.unmatched", order_id=ipn.order_id, payment_id=ipn.payment_id)
            return "unmatched", "unknown_order"
        order_payment = order.payment.payment_id if order.payment else None
        problem = binding_problem(ipn, order_payment, order.pay_currency)
        if problem is not None:
            code, detail = problem
            await self._queue(ipn, order, code, detail, bound=False)
            log.warning(
                "ipn.not_bound", order_id=ipn.order_id, payment_id=ipn.payment_id, code=code
            )
            return "unmatched", code
        # Bound, and not the order's own payment: a repeat payment, linked by parent_payment_id.
        parent = order_payment if ipn.payment_id != order_payment else None
        for _ in range(MAX_SAVE_ATTEMPTS):
            stored = await self.payments.get(ipn.payment_id)
            if stored is not None and stored.order_id != order.order_id:
                # Stored for another order (an admin approved an IPN that paired it with that
                # one): its credited total is not this order's to build on. A person looks.
                code = "payment_of_another_order"
                detail = f"payment {ipn.payment_id} is stored for order {stored.order_id}"
                await self._queue(ipn, order, code, detail, bound=False)
                log.warning(
                    "ipn.not_bound", order_id=ipn.order_id, payment_id=ipn.payment_id, code=code
                )
                return "unmatched", code
            state = stored.state if stored else PaymentState(payment_id=ipn.payment_id)
            decision = decide(state, ipn, self.policy)
            review = None
            if decision.review_code:
                detail = decision.review_detail or ""
                noted = stored is not None and any(
                    (n.code, n.detail) == (decision.review_code, detail) for n in stored.reviews
                )
                # Noted once: the same IPN comes again with every poll while it stays as it is.
                if not noted:
                    review = ReviewNote(decision.review_code, detail, self.clock())
                # Queued before the state is saved: a crash in between leaves the item, and the
                # resend finds the same item instead of queueing another.
                await self._queue(ipn, order, decision.review_code, detail, bound=True)
            if decision.state is None:
                return decision.verdict, decision.review_code
            entry = None
            if decision.credit is not None:
                metadata = {
                    "payment_status": ipn.status_text,
                    "outcome_amount": ipn.outcome_amount,
                    "pay_currency": ipn.pay_currency,
                }
                command = credit_command(
                    decision.credit, order.user_id, order.order_id, ipn.payment_id, metadata
                )
                entry = OutboxEntry(
                    command.model_copy(update={"issued_at": self.clock()}), self.clock()
                )
            saved = await save_payment(
                self.payments,
                self.publisher,
                stored,
                decision.state,
                order=(ipn.order_id, order.user_id),
                credit=entry,
                review=review,
                now=self.clock(),
                parent_payment_id=parent,
            )
            if saved:
                if decision.review_code:
                    log.warning("ipn.review", payment_id=ipn.payment_id, code=decision.review_code)
                return decision.verdict, decision.review_code
        raise IpnRejected("busy", f"payment {ipn.payment_id} is being updated; send it again")

    async def _queue(
        self, ipn: Ipn, order: DepositOrder, code: str, detail: str, *, bound: bool
    ) -> None:
        target = approvable_target(ipn, code)
        await self.reviews.add(
            ReviewItem(
                # Named by what the IPN reported (`review_target`), not by what approving credits:
                # an IPN sent again after an upgrade that changed the latter queues no second item.
                review_id=review_id_of(ipn, code, detail, review_target(ipn)),
                reason=code,
                detail=detail,
                order_id=order.order_id,
                payment_id=ipn.payment_id,
                payment_status=ipn.status_text[:40],
                user_id=order.user_id,
                bound=bound,
                currency=target[0] if target else None,
                cumulative=target[1] if target else None,
                created_at=self.clock(),
            )
        )

    def _sender_allowed(self, client_ip: str | None) -> bool:
        if not self.allowed_networks:
            return True
        try:
            address = ipaddress.ip_address(client_ip or "")
        except ValueError:
            return False
        return any(address in network for network in self.allowed_networks)


def _untrusted(record: IpnRecord) -> IpnRecord:
    if len(record.raw_body) <= MAX_UNTRUSTED_STORED_BYTES:
        return record
    return replace(record, raw_body=record.raw_body[:MAX_UNTRUSTED_STORED_BYTES], truncated=True)


def _audit_base(request: IpnRequest, now: datetime) -> IpnRecord:
    try:
        raw_text, is_base64 = request.raw_body.decode("utf-8"), False
    except UnicodeDecodeError:
        raw_text, is_base64 = base64.b64encode(request.raw_body).decode("ascii"), True
    headers = {k: v[:512] for k, v in request.headers.items() if k.lower() in AUDITED_HEADERS}
    return IpnRecord(
        received_at=now,
        raw_body=raw_text,
        raw_body_base64=is_base64,
        body_size=len(request.raw_body),
        headers=headers,
        client_ip=request.client_ip,
        trusted=False,
        verdict="received",
    )
