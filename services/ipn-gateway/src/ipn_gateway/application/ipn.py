"""Handling one NOWPayments IPN: verify, record, decide, credit exactly once."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

import structlog

from ipn_gateway.application.ports import (
    CommandPublisher,
    DepositOrders,
    IpnLog,
    IpnRecord,
    OutboxEntry,
    Payments,
    ReviewNote,
)
from ipn_gateway.domain.errors import Forbidden, GatewayError, IpnRejected
from ipn_gateway.domain.payments import (
    DEPOSIT_TRANSACTION_TYPE,
    ConfirmationPolicy,
    Credit,
    Ipn,
    PaymentState,
    Verdict,
    decide,
    read_ipn,
)
from ipn_gateway.domain.signature import verify_ipn
from shared.messaging import CreditCommand

log = structlog.get_logger(__name__)

MAX_IPN_BYTES: Final = 64 * 1024
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


@dataclass
class IpnHandler:
    secret: str
    policy: ConfirmationPolicy
    orders: DepositOrders
    payments: Payments
    ipn_log: IpnLog
    publisher: CommandPublisher
    clock: Callable[[], datetime]
    allowed_networks: tuple[IpNetwork, ...] = ()  # empty: any sender

    async def handle(self, request: IpnRequest) -> Verdict:
        """The verdict for a valid IPN; raises GatewayError (recorded first) for a refused one."""
        audit = _audit_base(request, self.clock())
        try:
            verdict, ipn, review = await self._process(request)
        except GatewayError as error:
            await self.ipn_log.record(replace(audit, verdict=error.code))
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

    async def _process(self, request: IpnRequest) -> tuple[Verdict, Ipn, str | None]:
        if not self._sender_allowed(request.client_ip):
            raise Forbidden("ip_not_allowed", "IPN sender address is not on the allow-list")
        if request.too_large or len(request.raw_body) > MAX_IPN_BYTES:
            raise IpnRejected("body_too_large", f"an IPN body is at most {MAX_IPN_BYTES} bytes")
        body = verify_ipn(request.raw_body, request.signature, self.secret)
        ipn = read_ipn(body)
        order = await self.orders.get(ipn.order_id)
        if order is None:
            log.warning("ipn.unmatched", order_id=ipn.order_id, payment_id=ipn.payment_id)
            return "unmatched", ipn, "unknown_order"
        for _ in range(MAX_SAVE_ATTEMPTS):
            stored = await self.payments.get(ipn.payment_id)
            state = stored.state if stored else PaymentState(payment_id=ipn.payment_id)
            decision = decide(state, ipn, self.policy)
            if decision.state is None:
                return decision.verdict, ipn, decision.review_code
            entry = self._credit_entry(decision.credit, order.user_id, ipn)
            review = None
            if decision.review_code:
                review = ReviewNote(
                    decision.review_code, decision.review_detail or "", self.clock()
                )
            saved = await self.payments.save(
                decision.state,
                order_id=stored.order_id if stored else ipn.order_id,
                user_id=stored.user_id if stored else order.user_id,
                expected_version=stored.version if stored else None,
                credit=entry,
                review=review,
                now=self.clock(),
            )
            if saved:
                if entry is not None:
                    await self._publish(ipn.payment_id, entry)
                if decision.review_code:
                    log.warning("ipn.review", payment_id=ipn.payment_id, code=decision.review_code)
                return decision.verdict, ipn, decision.review_code
        raise IpnRejected("busy", f"payment {ipn.payment_id} is being updated; send it again")

    def _sender_allowed(self, client_ip: str | None) -> bool:
        if not self.allowed_networks:
            return True
        try:
            address = ipaddress.ip_address(client_ip or "")
        except ValueError:
            return False
        return any(address in network for network in self.allowed_networks)

    def _credit_entry(self, credit: Credit | None, user_id: str, ipn: Ipn) -> OutboxEntry | None:
        if credit is None:
            return None
        command = CreditCommand(
            user_id=user_id,
            currency=credit.currency,
            amount=credit.amount,
            transaction_type=DEPOSIT_TRANSACTION_TYPE,
            reference_id=credit.reference_id,
            metadata={
                "order_id": ipn.order_id,
                "payment_id": ipn.payment_id,
                "payment_status": ipn.status_text,
                "outcome_amount": ipn.outcome_amount,
                "pay_currency": ipn.pay_currency,
            },
            issued_at=self.clock(),
        )
        return OutboxEntry(command=command, created_at=self.clock())

    async def _publish(self, payment_id: str, entry: OutboxEntry) -> None:
        # The credit is already durable in the payment document: a failure here only delays it
        # until the outbox relay publishes it again.
        try:
            await self.publisher.publish(entry.command)
            await self.payments.mark_published(payment_id, entry.command_id)
        except Exception:
            log.exception("ipn.publish_deferred", payment_id=payment_id, command=entry.command_id)


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
