"""Savings transfers: a user's available balance ↔ their savings, of one currency.

    pending ──savings_in/out applied──▶ completed
       └─────────────rejected─────────▶ failed (with the wallet's reason)

The status follows the wallet's result for the transfer's reference; a duplicate result carries
the first delivery's outcome. A request with an Idempotency-Key names its transfer (the route's
`named_id`), so a retry that runs again (its first attempt stopped without an answer) finds the
transfer already stored instead of making a second one.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Final, Literal

from shared.money import Currency, MoneyError, get_currency, parse_amount
from trading.savings.domain.errors import SavingsRefused

DEPOSIT_TRANSACTION_TYPE: Final = "savings_deposit"
WITHDRAWAL_TRANSACTION_TYPE: Final = "savings_withdrawal"
REFERENCE_PREFIX: Final = "savings:"

Direction = Literal["to_savings", "to_wallet"]
DIRECTIONS: Final[tuple[Direction, ...]] = ("to_savings", "to_wallet")


class TransferStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


def same_transfer(
    transfer: Mapping[str, object], user_id: str, currency: str, amount: Decimal, direction: str
) -> bool:
    """Whether a stored transfer is the one a request asks for (a retry, not another transfer)."""
    return (
        transfer["user_id"] == user_id
        and transfer["currency"] == currency
        and transfer["amount"] == amount
        and transfer["direction"] == direction
    )


def reference_id(transfer_id: str) -> str:
    return f"{REFERENCE_PREFIX}{transfer_id}"


def transfer_id_of(reference: str) -> str | None:
    return (
        reference.removeprefix(REFERENCE_PREFIX) if reference.startswith(REFERENCE_PREFIX) else None
    )


def transaction_type_of(direction: Direction) -> str:
    return DEPOSIT_TRANSACTION_TYPE if direction == "to_savings" else WITHDRAWAL_TRANSACTION_TYPE


def command_type_of(direction: Direction) -> str:
    """The wallet command a transfer of `direction` is: only its result answers the transfer."""
    return "savings_in" if direction == "to_savings" else "savings_out"


def validate_transfer(
    currency: object, amount: object, direction: object, aprs: Mapping[str, Decimal]
) -> tuple[Currency, Decimal, Direction]:
    """The checked request, or SavingsRefused with the code of the first problem.

    Money goes into savings only where a product exists; it may always come out (savings that
    arrived otherwise, e.g. migrated from the legacy system, must not be trapped).
    """
    if direction not in DIRECTIONS:
        raise SavingsRefused("invalid_direction", "direction must be to_savings or to_wallet")
    try:
        checked = get_currency(currency)
        value = parse_amount(amount, checked)
    except MoneyError as error:
        raise SavingsRefused(error.code, error.message) from None
    if direction == "to_savings" and checked.code not in aprs:
        raise SavingsRefused("no_savings_product", f"no savings product for {checked.code}")
    return checked, value, direction


def status_after(status: str, original_status: str | None) -> TransferStatus | None:
    """The transfer's status once the wallet answered `status`; a duplicate answers as the first
    delivery did, and one that does not say how that went moves nothing."""
    outcome = original_status if status == "duplicate" else status
    if outcome == "applied":
        return TransferStatus.COMPLETED
    if outcome == "rejected":
        return TransferStatus.FAILED
    return None
