"""Withdrawals: validation of a request and the state machine driven by the wallet's results.

    pending ──lock applied──▶ locked ──release applied──▶ approved
       │                        └─────unlock applied───▶ rejected
       └──lock rejected──▶ failed

An admin's decision is recorded on the locked withdrawal first (`decision`), in the same
conditional update that checks it is still undecided: two admins racing to approve and reject
cannot both send a command. The status then follows the wallet's result.

A withdrawal waits on the wallet while `pending` (the lock's answer) and while `locked` with a
decision (the answer to the decision's release or unlock). Every answer ends the wait: the lock's
moves it to `locked` or `failed`, an applied decision to `approved` or `rejected`, and a refused
one is undone (`decision` cleared, the refusal its `reason`) for an admin to decide again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final, Literal

from ipn_gateway.domain.addresses import ADDRESS_CHECKS, valid_address
from ipn_gateway.domain.errors import WithdrawalRefused
from shared.money import Currency, MoneyError, add, get_currency, parse_amount

LOCK_TRANSACTION_TYPE: Final = "withdrawal_lock"
RELEASE_TRANSACTION_TYPE: Final = "withdrawal_release"
UNLOCK_TRANSACTION_TYPE: Final = "withdrawal_unlock"
REFERENCE_PREFIX: Final = "withdrawal:"


class WithdrawalStatus(StrEnum):
    PENDING = "pending"
    LOCKED = "locked"
    APPROVED = "approved"
    REJECTED = "rejected"
    FAILED = "failed"


Decision = Literal["approve", "reject"]
CommandKind = Literal["lock", "release_locked", "unlock"]
Outcome = Literal["applied", "rejected"]

# (the command a result answers, its outcome) → (status required now, status after).
TRANSITIONS: Final[
    Mapping[tuple[CommandKind, Outcome], tuple[WithdrawalStatus, WithdrawalStatus]]
] = {
    ("lock", "applied"): (WithdrawalStatus.PENDING, WithdrawalStatus.LOCKED),
    ("lock", "rejected"): (WithdrawalStatus.PENDING, WithdrawalStatus.FAILED),
    ("release_locked", "applied"): (WithdrawalStatus.LOCKED, WithdrawalStatus.APPROVED),
    ("unlock", "applied"): (WithdrawalStatus.LOCKED, WithdrawalStatus.REJECTED),
}
# Waiting for the wallet or for an admin: counted against the user's open-withdrawals limit.
OPEN_STATUSES: Final = frozenset({WithdrawalStatus.PENDING, WithdrawalStatus.LOCKED})
# Statuses in which the amount (fee included) counts against the user's daily limit.
COUNTED_AGAINST_LIMIT: Final = frozenset(
    {WithdrawalStatus.PENDING, WithdrawalStatus.LOCKED, WithdrawalStatus.APPROVED}
)


def awaits_wallet(status: WithdrawalStatus, decision: Decision | None) -> bool:
    """Whether the withdrawal's last command is still unanswered (see the module's docstring)."""
    return status is WithdrawalStatus.PENDING or (
        status is WithdrawalStatus.LOCKED and decision is not None
    )


def reference_id(withdrawal_id: str, attempt: int = 1) -> str:
    """`withdrawal:<id>` (the lock's reference and hold, and the first decision's reference);
    a decision taken again after the wallet refused one is `withdrawal:<id>:attempt:<n>`, so the
    wallet does not answer it with the refused one's outcome."""
    base = f"{REFERENCE_PREFIX}{withdrawal_id}"
    return base if attempt <= 1 else f"{base}:attempt:{attempt}"


def attempt_of(reference: str) -> int:
    """Which decision of its withdrawal a reference names (the lock's and the first are 1)."""
    _, marker, attempt = reference.rpartition(":attempt:")
    return int(attempt) if marker and attempt.isdigit() else 1


def withdrawal_id_of(reference: str) -> str | None:
    if not reference.startswith(REFERENCE_PREFIX):
        return None
    return reference.removeprefix(REFERENCE_PREFIX).split(":", 1)[0] or None


@dataclass(frozen=True, slots=True)
class WithdrawalPolicy:
    """Fees and limits per currency code. A currency without a fee cannot be withdrawn."""

    fees: Mapping[str, Decimal]
    max_per_request: Mapping[str, Decimal]
    daily_limit: Mapping[str, Decimal]
    max_open_per_user: int = 5


@dataclass(frozen=True, slots=True)
class WithdrawalRequest:
    """A validated request: what to lock (amount + fee) and where the money goes."""

    currency: str
    amount: Decimal
    fee: Decimal
    address: str

    @property
    def locked_amount(self) -> Decimal:
        return add(self.amount, self.fee)


def validate_request(
    currency_code: object, amount_text: object, address: object, policy: WithdrawalPolicy
) -> WithdrawalRequest:
    """Check currency, amount and address against the policy; raises WithdrawalRefused."""
    try:
        currency: Currency = get_currency(currency_code)
        amount = parse_amount(amount_text, currency)
    except MoneyError as error:
        raise WithdrawalRefused(error.code, error.message) from None
    fee = policy.fees.get(currency.code)
    if fee is None or currency.code not in ADDRESS_CHECKS:
        raise WithdrawalRefused(
            "currency_not_withdrawable", f"{currency.code} cannot be withdrawn here"
        )
    maximum = policy.max_per_request.get(currency.code)
    if maximum is not None and add(amount, fee) > maximum:
        raise WithdrawalRefused(
            "amount_above_limit",
            f"at most {maximum} {currency.code} per withdrawal, the fee of {fee} included",
        )
    if not valid_address(currency.code, address):
        raise WithdrawalRefused(
            "invalid_address", f"not a {currency.code} address (or its checksum is wrong)"
        )
    assert isinstance(address, str)
    return WithdrawalRequest(currency=currency.code, amount=amount, fee=fee, address=address)


def check_limits(
    request: WithdrawalRequest, open_count: int, counted_today: Decimal, policy: WithdrawalPolicy
) -> None:
    """Per-user limits: open withdrawals, and the rolling 24 h total (fees included) of the currency.

    The caller holds the user's request guard while counting and inserting, so two concurrent
    requests cannot both fit under a limit that only one of them fits under.
    """
    if open_count >= policy.max_open_per_user:
        raise WithdrawalRefused(
            "too_many_open_withdrawals",
            f"at most {policy.max_open_per_user} withdrawals may wait for a decision",
        )
    limit = policy.daily_limit.get(request.currency)
    if limit is not None and add(counted_today, request.locked_amount) > limit:
        raise WithdrawalRefused(
            "daily_limit_exceeded",
            f"at most {limit} {request.currency} per 24 hours, fees included",
        )


def outcome_of(status: str, reason: str | None, original_status: str | None = None) -> Outcome:
    """A wallet result as applied or rejected.

    `duplicate` answers a resent command and repeats the first outcome: `original_status` says
    which; without it, a duplicate with a reason repeats a rejection.
    """
    if status == "duplicate":
        if original_status is not None:
            return "rejected" if original_status == "rejected" else "applied"
        return "rejected" if reason else "applied"
    return "rejected" if status == "rejected" else "applied"
