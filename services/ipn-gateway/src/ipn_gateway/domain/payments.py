"""NOWPayments payments: the IPN status machine and the crediting decision.

A payment's status only moves forward along waiting → confirming → confirmed → sending →
(partially_paid →) finished; failed, refunded and expired end it. An IPN with an older status, or
one already seen, changes nothing, except a credited partially_paid reporting more (the payer sent
more while the payment is still partially paid). Crediting follows a per-coin policy (default: at
`finished`), and a payment is credited at most its latest reported outcome in total: a later,
larger outcome credits only the difference, under a reference of its own so the wallet applies it
once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Final, Literal

from ipn_gateway.domain.errors import IpnRejected
from ipn_gateway.domain.js_json import JsonNumber, JsonValue
from shared.money import (
    Currency,
    MoneyError,
    format_amount,
    get_currency,
    parse_amount,
    parse_decimal,
    subtract,
)

DEPOSIT_TRANSACTION_TYPE: Final = "deposit_nowpayments"


class PaymentStatus(StrEnum):
    WAITING = "waiting"
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    SENDING = "sending"
    PARTIALLY_PAID = "partially_paid"
    FINISHED = "finished"
    FAILED = "failed"
    REFUNDED = "refunded"
    EXPIRED = "expired"


# How far along a status is; a payment never goes back to a lower rank. partially_paid sits
# before finished because the payer may still send the rest, and NOWPayments then reports finished.
STATUS_RANK: Final[Mapping[PaymentStatus, int]] = {
    PaymentStatus.WAITING: 0,
    PaymentStatus.CONFIRMING: 1,
    PaymentStatus.CONFIRMED: 2,
    PaymentStatus.SENDING: 3,
    PaymentStatus.PARTIALLY_PAID: 4,
    PaymentStatus.FINISHED: 5,
    PaymentStatus.FAILED: 6,
    PaymentStatus.REFUNDED: 6,
    PaymentStatus.EXPIRED: 6,
}
NEVER_CREDITED: Final = frozenset(
    {PaymentStatus.FAILED, PaymentStatus.REFUNDED, PaymentStatus.EXPIRED}
)
# A payment in one of these may still change: the missed-webhook poller keeps asking about it.
OPEN_STATUSES: Final = frozenset(
    {
        PaymentStatus.WAITING,
        PaymentStatus.CONFIRMING,
        PaymentStatus.CONFIRMED,
        PaymentStatus.SENDING,
        PaymentStatus.PARTIALLY_PAID,
    }
)
# Statuses of the main chain at or after which a coin may be credited.
CREDITABLE_FROM: Final = (PaymentStatus.CONFIRMED, PaymentStatus.SENDING, PaymentStatus.FINISHED)
# Statuses that say coins arrived (what a policy may credit, and a partial payment).
FUNDS_REPORTED: Final = frozenset({*CREDITABLE_FROM, PaymentStatus.PARTIALLY_PAID})


@dataclass(frozen=True, slots=True)
class ConfirmationPolicy:
    """When a deposit is credited.

    `credit_at` maps the coin that was paid (`pay_currency`: its chain carries the reorg risk;
    registry code or NOWPayments ticker, any case) to the first status that credits it; others
    credit at `default_credit_at`. `credit_partially_paid` credits what
    actually arrived when a payment ends partially paid; otherwise it waits for manual review.
    """

    default_credit_at: PaymentStatus = PaymentStatus.FINISHED
    credit_at: Mapping[str, PaymentStatus] = field(default_factory=dict)
    credit_partially_paid: bool = False

    def __post_init__(self) -> None:
        for status in (self.default_credit_at, *self.credit_at.values()):
            if status not in CREDITABLE_FROM:
                raise ValueError(f"a deposit can be credited at {CREDITABLE_FROM}, not {status}")

    def first_crediting_status(self, coin: str) -> PaymentStatus:
        lowered = {k.lower(): v for k, v in self.credit_at.items()}
        if coin.lower() in lowered:
            return lowered[coin.lower()]
        try:
            code = get_currency(coin).code.lower()
        except MoneyError:
            return self.default_credit_at
        return lowered.get(code, self.default_credit_at)

    def credits(self, status: PaymentStatus, coin: str) -> bool:
        if status is PaymentStatus.PARTIALLY_PAID:
            return self.credit_partially_paid
        if status in NEVER_CREDITED:
            return False
        return STATUS_RANK[status] >= STATUS_RANK[self.first_crediting_status(coin)]


@dataclass(frozen=True, slots=True)
class Ipn:
    """The fields of a verified IPN that the gateway acts on; amounts keep their exact text."""

    payment_id: str
    # None for a status this code does not know (NOWPayments may add some): never credited.
    payment_status: PaymentStatus | None
    status_text: str
    order_id: str
    pay_currency: str
    outcome_currency: str | None
    outcome_amount: str | None
    actually_paid: str | None
    # A re-deposit NOWPayments links to the payment create-deposit made (its documented field).
    parent_payment_id: str | None = None


def _required(body: Mapping[str, JsonValue], name: str) -> str:
    value = _text(body, name)
    if value is None:
        raise IpnRejected("missing_field", f"IPN field {name} is missing")
    return value


def _text(body: Mapping[str, JsonValue], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, str) and 0 < len(value) <= 200:
        return value
    raise IpnRejected("invalid_field", f"IPN field {name} must be a string or a number")


_PAYMENT_ID: Final = re.compile(r"[1-9][0-9]{0,19}")


def _payment_id(body: Mapping[str, JsonValue], name: str) -> str | None:
    # NOWPayments' ids are integers; one spelling only, so that one payment is one key.
    value = _text(body, name)
    if value is not None and not _PAYMENT_ID.fullmatch(value):
        raise IpnRejected("invalid_field", f"IPN field {name} is not a payment id")
    return value


def _known_status(text: str) -> PaymentStatus | None:
    try:
        return PaymentStatus(text)
    except ValueError:
        return None


def parent_payment_id_of(body: Mapping[str, JsonValue]) -> str | None:
    """The payment a re-deposit's IPN names as its parent, if it names one."""
    return _payment_id(body, "parent_payment_id")


def read_ipn(body: Mapping[str, JsonValue], stored_order_id: str | None = None) -> Ipn:
    """The acted-on fields of a verified body; raises IpnRejected for missing or odd ones.

    `stored_order_id` is the order our own records tie the payment to (a re-deposit's parent
    payment, a polled payment): it stands in for an `order_id` the body does not carry.
    """
    payment_id = _payment_id(body, "payment_id")
    if payment_id is None:
        raise IpnRejected("missing_field", "IPN field payment_id is missing")
    status_text = _required(body, "payment_status")
    order_id = _text(body, "order_id") or stored_order_id
    if order_id is None:
        raise IpnRejected(
            "missing_field", "IPN field order_id is missing and no stored order holds its payment"
        )
    pay_currency = _required(body, "pay_currency")
    return Ipn(
        payment_id=payment_id,
        parent_payment_id=_payment_id(body, "parent_payment_id"),
        payment_status=_known_status(status_text),
        status_text=status_text,
        order_id=order_id,
        pay_currency=pay_currency,
        outcome_currency=_text(body, "outcome_currency"),
        outcome_amount=_text(body, "outcome_amount"),
        actually_paid=_text(body, "actually_paid"),
    )


@dataclass(frozen=True, slots=True)
class PaymentState:
    """What the gateway knows of one payment: highest status, statuses seen, credited so far."""

    payment_id: str
    status: PaymentStatus | None = None
    seen: frozenset[str] = frozenset()
    credited: Decimal = Decimal(0)
    credit_currency: str | None = None
    credits: int = 0
    # Review items whose approval raised `credited` (each counts once).
    approved_reviews: frozenset[str] = frozenset()


Verdict = Literal["credited", "pending", "duplicate", "ignored", "unmatched"]


@dataclass(frozen=True, slots=True)
class Credit:
    """Money to credit for a payment: `amount` now, bringing the total credited to `cumulative`."""

    currency: str
    amount: Decimal
    cumulative: Decimal
    reference_id: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one IPN: the answer, the new state (None: unchanged), a credit, a review note."""

    verdict: Verdict
    state: PaymentState | None = None
    credit: Credit | None = None
    review_code: str | None = None
    review_detail: str | None = None


def credit_reference(payment_id: str, cumulative: Decimal, first: bool) -> str:
    """`nowpayments:<id>` for the first credit, `...:topup:<cumulative>` for each later one."""
    base = f"nowpayments:{payment_id}"
    return base if first else f"{base}:topup:{format_amount(cumulative)}"


def binding_problem(
    ipn: Ipn, order_payment_id: str | None, order_pay_currency: str
) -> tuple[str, str] | None:
    """Why an IPN may not act on the order it names (a review code and detail), or None.

    The payment must be the one create-deposit stored for the order, or a re-deposit that
    NOWPayments links to it by `parent_payment_id`; and it must be paid in the order's coin.
    """
    if order_payment_id is None:
        return "payment_not_recorded", f"order has no payment; the IPN names {ipn.payment_id}"
    if order_payment_id not in (ipn.payment_id, ipn.parent_payment_id):
        return (
            "payment_id_mismatch",
            f"order's payment is {order_payment_id}, the IPN names {ipn.payment_id}",
        )
    if ipn.pay_currency.strip().lower() != order_pay_currency.strip().lower():
        return (
            "pay_currency_mismatch",
            f"order is paid in {order_pay_currency}, the IPN says {ipn.pay_currency[:40]}",
        )
    return None


def decide(state: PaymentState, ipn: Ipn, policy: ConfirmationPolicy) -> Decision:
    """What one verified IPN does to a payment.

    A status whose IPN went to review (nothing credited) is not added to `seen`: a corrected
    resend of that same status is decided again rather than answered `duplicate` forever. A
    credited partially_paid reporting more than was credited tops the payment up.
    """
    status = ipn.payment_status
    if status is None:
        detail = f"unknown payment_status {ipn.status_text[:40]!r}"
        return Decision("ignored", review_code="unknown_status", review_detail=detail)
    if status.value in state.seen:
        if status is PaymentStatus.PARTIALLY_PAID and _paid_more(state, ipn, policy):
            # The payer sent more, still short of the price: NOWPayments reports partially_paid
            # again with the larger amount, and the difference is credited (a top-up).
            return _credit(state, state, state, ipn)
        return Decision("duplicate")
    if state.status is not None and (
        STATUS_RANK[status] < STATUS_RANK[state.status]
        or (STATUS_RANK[status] == STATUS_RANK[state.status] and status is not state.status)
    ):
        # An older status arriving late (or a rival terminal one) changes nothing.
        if state.status in NEVER_CREDITED and status in FUNDS_REPORTED:
            # Funds reported for a payment that ended uncredited (a late payment NOWPayments
            # completed after all?): nothing is credited on it, but a person is told.
            detail = f"{status} after the payment was {state.status}"
            return Decision("ignored", review_code="status_after_end", review_detail=detail)
        return Decision("ignored")
    moved = replace(state, status=status, seen=state.seen | {status.value})
    unresolved = replace(state, status=status)
    if status in NEVER_CREDITED:
        if state.credited > 0:
            return Decision(
                "ignored",
                moved,
                review_code="status_after_credit",
                review_detail=f"{status} after {format_amount(state.credited)} was credited",
            )
        return Decision("ignored", moved)
    if not policy.credits(status, ipn.pay_currency):
        if status is PaymentStatus.PARTIALLY_PAID:
            return Decision(
                "ignored",
                unresolved,
                review_code="partially_paid_not_credited",
                review_detail=f"actually_paid {ipn.actually_paid} of {ipn.pay_currency}",
            )
        return Decision("pending", moved)
    return _credit(state, moved, unresolved, ipn)


def _paid_more(state: PaymentState, ipn: Ipn, policy: ConfirmationPolicy) -> bool:
    """Whether a partially_paid IPN of a payment still partially paid, and credited as such,
    reports more than was credited, in the same currency."""
    if state.status is not PaymentStatus.PARTIALLY_PAID:
        return False
    if not policy.credits(PaymentStatus.PARTIALLY_PAID, ipn.pay_currency):
        return False
    target = review_target(ipn)
    return (
        target is not None
        and state.credit_currency in (None, target[0])
        and target[1] > state.credited
    )


def _credit(
    state: PaymentState, moved: PaymentState, unresolved: PaymentState, ipn: Ipn
) -> Decision:
    if ipn.outcome_amount is None or ipn.outcome_currency is None:
        return Decision(
            "ignored", unresolved, review_code="missing_outcome", review_detail="no outcome_amount"
        )
    try:
        currency: Currency = get_currency(ipn.outcome_currency)
        cumulative = parse_amount(ipn.outcome_amount, currency)
    except MoneyError as error:
        # e.g. amount_too_precise: more decimals than the ledger keeps. Never rounded: reviewed.
        return Decision("ignored", unresolved, review_code=error.code, review_detail=error.message)
    if state.credit_currency is not None and state.credit_currency != currency.code:
        return Decision(
            "ignored",
            unresolved,
            review_code="outcome_currency_changed",
            review_detail=f"credited in {state.credit_currency}, now {currency.code}",
        )
    if cumulative <= state.credited:
        code = "outcome_decreased" if cumulative < state.credited else None
        detail = f"outcome {format_amount(cumulative)} < credited {format_amount(state.credited)}"
        return Decision(
            "duplicate", moved, review_code=code, review_detail=detail if code else None
        )
    amount = subtract(cumulative, state.credited)
    credit = Credit(
        currency=currency.code,
        amount=amount,
        cumulative=cumulative,
        reference_id=credit_reference(ipn.payment_id, cumulative, first=state.credits == 0),
    )
    credited_state = replace(
        moved, credited=cumulative, credit_currency=currency.code, credits=state.credits + 1
    )
    return Decision("credited", credited_state, credit=credit)


# Review reasons that are alerts about a payment already credited: an admin looks and dismisses;
# approving one could only credit more (a refund's amount, say), so they carry no amount.
ALERT_ONLY: Final = frozenset({"status_after_credit", "outcome_decreased", "status_after_end"})
# Statuses after which nothing of the payment may be credited, approved or not: its coins went
# back to the payer (refunded) or never arrived (failed).
ENDED: Final = frozenset({PaymentStatus.FAILED, PaymentStatus.REFUNDED})
# Statuses whose outcome is not what arrived: `waiting` comes with actually_paid 0 and the outcome
# the whole payment would bring, `confirming` with coins no confirmation backs yet (no policy
# credits before `confirmed`). Approving an item of one could credit money that never arrives.
ESTIMATED: Final = frozenset({PaymentStatus.WAITING, PaymentStatus.CONFIRMING})


def approvable_target(ipn: Ipn, code: str) -> tuple[str, Decimal] | None:
    """What approving a review item of this IPN (queued for `code`) brings the payment's credited
    total to, or None when the item can only be dismissed.

    An outcome with more decimals than the coin has (`amount_too_precise`: NOWPayments works its
    outcomes out in doubles after its fees) is approvable rounded down to the coin's scale: what
    a user receives rounds down, and only an admin's approval credits it."""
    if code in ALERT_ONLY or ipn.payment_status in NEVER_CREDITED | ESTIMATED:
        return None  # a refund, a failure, an expiry or an estimate reports nothing to credit
    target = review_target(ipn)
    if target is not None or code != "amount_too_precise":
        return target
    if ipn.outcome_amount is None or ipn.outcome_currency is None:
        return None
    try:
        currency = get_currency(ipn.outcome_currency)
        reported = parse_decimal(ipn.outcome_amount)
        rounded = reported.quantize(Decimal(1).scaleb(-currency.scale), rounding=ROUND_DOWN)
        return currency.code, parse_amount(rounded, currency)
    except (MoneyError, InvalidOperation):
        return None


def review_target(ipn: Ipn) -> tuple[str, Decimal] | None:
    """What approving a review of this IPN would bring the payment's credited total to: its
    outcome, when that is an amount the ledger can hold (else an admin has nothing to approve)."""
    if ipn.outcome_amount is None or ipn.outcome_currency is None:
        return None
    try:
        currency = get_currency(ipn.outcome_currency)
        return currency.code, parse_amount(ipn.outcome_amount, currency)
    except MoneyError:
        return None


def approve_review(
    state: PaymentState,
    review_id: str,
    currency: str,
    cumulative: Decimal,
    *,
    bound: bool,
    refused: tuple[str, str] | None = None,
) -> Decision:
    """An admin approved a review item of this payment: credit what brings it up to `cumulative`.

    A `bound` item (its payment is its order's) credits under a reference of its own; approving it
    after later IPNs already credited that much credits nothing more. An item of a payment not tied
    to its order credits as that payment's IPNs would: the first credit under
    `nowpayments:<id>`, a later one only the difference, under the top-up reference. Its amount
    is what the payment reported, so one not above what the payment was credited already is
    refused (`already_credited`), not approved for nothing. Approving an item the payment records
    as approved credits nothing more; another currency than the payment's credits is refused
    (`outcome_currency_changed`). A refusal (verdict `ignored`) carries its code and reason;
    `refused` is one the caller found (an alert, a payment its items say ended), which an item
    the payment already records as approved does not get: that approval is finished.
    """
    if review_id in state.approved_reviews:
        return Decision("duplicate")
    if refused is not None:
        return Decision("ignored", review_code=refused[0], review_detail=refused[1])
    if state.status in ENDED:
        detail = f"the payment is {state.status}: nothing of it can be credited; dismiss the item"
        return Decision("ignored", review_code="payment_ended", review_detail=detail)
    if state.credit_currency is not None and state.credit_currency != currency:
        detail = f"the payment was credited in {state.credit_currency}, not {currency}"
        return Decision("ignored", review_code="outcome_currency_changed", review_detail=detail)
    approved = replace(state, approved_reviews=state.approved_reviews | {review_id})
    if cumulative <= state.credited:
        if bound:
            return Decision("duplicate", approved)
        detail = (
            f"the payment was credited {format_amount(state.credited)} {currency} already; "
            f"this item reports {format_amount(cumulative)}"
        )
        return Decision("ignored", review_code="already_credited", review_detail=detail)
    if bound:
        reference = f"nowpayments:{state.payment_id}:review:{review_id}"
    else:
        reference = credit_reference(state.payment_id, cumulative, first=state.credits == 0)
    credit = Credit(
        currency=currency,
        amount=subtract(cumulative, state.credited),
        cumulative=cumulative,
        reference_id=reference,
    )
    credited = replace(
        approved, credited=cumulative, credit_currency=currency, credits=state.credits + 1
    )
    return Decision("credited", credited, credit=credit)
