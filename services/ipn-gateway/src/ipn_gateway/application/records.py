"""The records the gateway stores: deposit orders, payments, the IPN audit trail, review items
and withdrawals, each with the wallet commands its changes caused (an embedded outbox)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from ipn_gateway.domain.payments import PaymentState
from ipn_gateway.domain.withdrawals import Decision, WithdrawalStatus
from shared.outbox import RecordedCommand


@dataclass(frozen=True, slots=True)
class OutboxEntry(RecordedCommand):
    """A wallet command recorded before it is published; `published` once the broker has it. Its
    command is None when what is stored is one the command model now refuses, kept as stored
    (`shared.outbox.RecordedCommand`)."""

    # The wallet's answer, once it came: its status (applied, duplicate, rejected) and reason.
    result_status: str | None = None
    result_reason: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedPayment:
    """What NOWPayments answered to a payment creation."""

    payment_id: str
    pay_address: str
    pay_currency: str
    pay_amount: str
    price_amount: str
    price_currency: str


@dataclass(frozen=True, slots=True)
class DepositOrder:
    """Whose deposit an order id is. Stored before NOWPayments is asked, so that an IPN can be
    matched even if the gateway stops before it records the payment."""

    order_id: str
    user_id: str
    pay_currency: str
    price_amount: str
    price_currency: str
    created_at: datetime
    payment: CreatedPayment | None = None
    # The missed-webhook poller: when it last asked NOWPayments, and whether the payment ended.
    polled_at: datetime | None = None
    closed: bool = False


@dataclass(frozen=True, slots=True)
class ReviewNote:
    """Something a person must look at: an IPN that could not be credited as it stands."""

    code: str
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment as stored: its state, the user it credits, and its credit commands."""

    state: PaymentState
    order_id: str
    user_id: str
    version: int = 0
    outbox: tuple[OutboxEntry, ...] = ()
    reviews: tuple[ReviewNote, ...] = ()
    # A repeat payment (a re-deposit to the order's address): the order's payment, which
    # NOWPayments named as its `parent_payment_id`. None for the order's own payment.
    parent_payment_id: str | None = None
    # When the gateway first stored it.
    created_at: datetime | None = None
    # The missed-webhook poller, for a repeat payment: when it last asked NOWPayments, and
    # whether it stopped asking (the payment ended, or it gave up).
    polled_at: datetime | None = None
    poll_closed: bool = False
    # When its credits the wallet had not answered were last sent again (`UnansweredCredits`).
    asked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IpnRecord:
    """One IPN as received, whatever became of it (the audit trail)."""

    received_at: datetime
    raw_body: str  # UTF-8 text, or base64 when it was not UTF-8 (raw_body_base64)
    raw_body_base64: bool
    body_size: int
    headers: Mapping[str, str]
    client_ip: str | None
    trusted: bool  # the signature matched
    verdict: str  # the answer (credited, pending, ...) or the refusal code (invalid_signature, ...)
    payment_id: str | None = None
    payment_status: str | None = None
    order_id: str | None = None
    review_code: str | None = None
    # "ipn" (posted to us) or "poll" (NOWPayments' answer to the missed-webhook poller).
    source: str = "ipn"
    # An untrusted body is stored cut to a few KiB: posting junk cannot fill the database.
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Withdrawal:
    withdrawal_id: str
    user_id: str
    currency: str
    amount: Decimal
    fee: Decimal
    address: str
    status: WithdrawalStatus
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    decision: Decision | None = None
    decided_by: str | None = None
    # How many decisions were sent; a decision the wallet refused may be taken again.
    attempt: int = 0
    outbox: tuple[OutboxEntry, ...] = field(default=())
    # When its last command was last sent again, its answer not having come (not a move: the
    # withdrawal's `updated_at` stays).
    asked_at: datetime | None = None


# `approving`: an admin claimed the item and its payment is being credited; only approving again
# moves it on (to `approved`), dismiss does not take it.
ReviewStatus = Literal["open", "approving", "approved", "dismissed"]


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """An IPN or payment held for a person: why, and what approving it would credit.

    Approving raises the credited total of its payment (kept in the payment's document) to
    `cumulative`, crediting the difference. `bound` items belong to a payment tied to its order,
    whose IPNs credit it too; the others (an IPN whose payment is not its order's) are credited by
    their approvals only: the first under `nowpayments:<payment_id>`, later ones as top-ups, and
    one whose amount the payment was credited already is refused. `review_id` is derived from
    what was seen (the amount too), so the same IPN sent again does not queue a second item and
    one reporting another amount queues its own. `outbox` holds the credits of unbound items
    approved before their payment's document kept them (still relayed until published).
    """

    review_id: str
    reason: str
    detail: str
    order_id: str
    payment_id: str
    payment_status: str
    user_id: str | None
    bound: bool
    currency: str | None
    cumulative: Decimal | None
    created_at: datetime
    status: ReviewStatus = "open"
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None
    outbox: tuple[OutboxEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class WithdrawalPage:
    items: tuple[Withdrawal, ...]
    next_cursor: str | None
