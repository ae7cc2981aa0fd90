"""Quotes and their execution: the contract's formulas, exactly, and the quote's lifecycle.

fee      = pay_amount × fee_rate, rounded UP to the pay currency's scale
rate     = price(pay) ÷ price(receive) × (1 − spread), rounded DOWN to 18 fractional digits
receive  = (pay_amount − fee) × rate (the rate as returned), rounded DOWN to the receive scale

Prices are GBP per unit (GBP itself is 1), so a cross rate goes through GBP. An express buy is
the same with the fiat currency as the pay side (its rate: crypto per 1 unit of fiat).
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Final

from shared.money import Currency, format_amount, max_integer_digits
from shared.prices import FUTURE_TOLERANCE
from trading.errors import Conflict, Invalid, NotFound
from trading.prices.domain import Price

RATE_PLACES: Final = 18
RATE_QUANTUM: Final = Decimal(1).scaleb(-RATE_PLACES)
# Exact for every product of amounts and rates we make; the quotient is floored, never rounded.
_EXACT: Final = decimal.Context(
    prec=200,
    rounding=ROUND_FLOOR,
    traps=[decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero],
)


class ConversionKind(StrEnum):
    """Also the wallet transaction_type of the exchange command."""

    SWAP = "swap"
    EXPRESS_BUY = "express_buy"


class Status(StrEnum):
    QUOTED = "quoted"  # made, not executed (maybe expired)
    PENDING = "pending"  # executed: the wallet command is on its way
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Terms:
    """What a quote is made with; from the settings of its kind."""

    fee_rate: Decimal
    spread: Decimal
    ttl: timedelta

    def __post_init__(self) -> None:
        if not (Decimal(0) <= self.fee_rate < 1 and Decimal(0) <= self.spread < 1):
            raise ValueError("fee rate and spread must be in [0, 1)")
        if self.ttl <= timedelta(0):
            raise ValueError("a quote must live for some time")


def fee_up(amount: Decimal, fee_rate: Decimal, currency: Currency) -> Decimal:
    """amount × fee_rate rounded up to the currency's scale (1 wei of fee is still a fee)."""
    product = _EXACT.multiply(amount, fee_rate)
    return product.quantize(currency.quantum, rounding=ROUND_CEILING, context=_EXACT)


def rate_down(pay_price: Decimal, receive_price: Decimal, spread: Decimal) -> Decimal:
    """price(pay) ÷ price(receive) × (1 − spread), floored to 18 fractional digits.

    Computed as one exact numerator divided once: flooring the quotient at 200 significant
    digits and then at 18 decimals is the floor of the exact value.
    """
    numerator = _EXACT.multiply(pay_price, _EXACT.subtract(Decimal(1), spread))
    quotient = _EXACT.divide(numerator, receive_price)
    return quotient.quantize(RATE_QUANTUM, rounding=ROUND_FLOOR, context=_EXACT)


def receive_down(amount: Decimal, fee: Decimal, rate: Decimal, currency: Currency) -> Decimal:
    """(amount − fee) × rate floored to the receive currency's scale."""
    net = _EXACT.subtract(amount, fee)
    product = _EXACT.multiply(net, rate)
    return product.quantize(currency.quantum, rounding=ROUND_FLOOR, context=_EXACT)


@dataclass(frozen=True, slots=True)
class Quote:
    """A firm offer to one user until expires_at; executed at most once.

    After execution the same record is the swap (or express buy order): `execution_id` is its
    swap_id / order_id and `status` follows the wallet's result.
    """

    quote_id: str
    kind: ConversionKind
    user_id: str
    pay_currency: str
    pay_amount: Decimal
    fee: Decimal
    rate: Decimal
    receive_currency: str
    receive_amount: Decimal
    pay_price: Price
    receive_price: Price
    terms: Terms
    created_at: datetime
    expires_at: datetime
    status: Status = Status.QUOTED
    execution_id: str | None = None
    executed_at: datetime | None = None
    reason: str | None = None

    @property
    def wallet_reference(self) -> str:
        """The exchange command's reference_id (idempotency key with type and kind)."""
        if self.execution_id is None:
            raise ValueError("not executed")
        return f"{self.kind.value}:{self.execution_id}"

    def executed(self, execution_id: str, at: datetime) -> Quote:
        return replace(self, status=Status.PENDING, execution_id=execution_id, executed_at=at)

    def expired(self, now: datetime) -> bool:
        # Made further ahead of this clock than hosts' clocks differ: the clock stepped back
        # since, and by it the quote would live its TTL plus the step.
        return now >= self.expires_at or self.created_at - now > FUTURE_TOLERANCE


class QuoteUsed(Conflict):
    """The quote was executed already: `execution_id` is the swap or order it became (a client
    whose execute answer was lost follows that one)."""

    def __init__(self, execution_id: str) -> None:
        super().__init__("quote_used", "this quote was already executed")
        self.execution_id = execution_id


def refuse_same_currency(pay: Currency, receive: Currency) -> None:
    if pay.code == receive.code:
        raise Invalid("same_currency", "pay and receive currencies must differ")


def make_quote(
    *,
    quote_id: str,
    kind: ConversionKind,
    user_id: str,
    pay: Currency,
    pay_amount: Decimal,
    receive: Currency,
    pay_price: Price,
    receive_price: Price,
    terms: Terms,
    now: datetime,
) -> Quote:
    """A quote by the contract's formulas, or Invalid when the user would receive nothing."""
    refuse_same_currency(pay, receive)
    fee = fee_up(pay_amount, terms.fee_rate, pay)
    rate = rate_down(pay_price.price, receive_price.price, terms.spread)
    receive_amount = receive_down(pay_amount, fee, rate, receive)
    if fee >= pay_amount or receive_amount <= 0:
        raise Invalid(
            "amount_too_small",
            f"{format_amount(pay_amount)} {pay.code} buys less than the smallest unit of "
            f"{receive.code} after the fee",
        )
    if receive_amount.adjusted() >= max_integer_digits(receive):
        raise Invalid("amount_too_large", f"that would be more {receive.code} than exists")
    return Quote(
        quote_id=quote_id,
        kind=kind,
        user_id=user_id,
        pay_currency=pay.code,
        pay_amount=pay_amount,
        fee=fee,
        rate=rate,
        receive_currency=receive.code,
        receive_amount=receive_amount,
        pay_price=pay_price,
        receive_price=receive_price,
        terms=terms,
        created_at=now,
        expires_at=now + terms.ttl,
    )


def refusal_to_execute(
    quote: Quote | None, kind: ConversionKind, user_id: str, now: datetime
) -> Exception:
    """Why a quote could not be claimed for execution (the claim is the conditional update)."""
    if quote is None or quote.kind is not kind or quote.user_id != user_id:
        # Another user's quote is as good as absent: no hint that it exists.
        return NotFound("quote_not_found", "no such quote")
    if quote.status is not Status.QUOTED:
        if quote.execution_id is None:  # a claim always sets one: without it, nothing to name
            return Conflict("quote_used", "this quote was already executed")
        return QuoteUsed(quote.execution_id)
    if quote.expired(now):
        return Conflict("quote_expired", "this quote has expired; ask for a new one")
    # Claimable after all, though the claim (at the same `now`) was refused: this read has not
    # seen the write that refused it (a racing execute's claim, read where that write has not yet
    # arrived). Nothing was executed by this request: executing the quote again tells why.
    return Conflict("quote_busy", "the quote changed while executing; try again")


def outcome_of(
    result_status: str, original_status: str | None, reason: str | None
) -> tuple[Status, str | None]:
    """The conversion's final status from a wallet result (a duplicate repeats the first)."""
    status = original_status if result_status == "duplicate" and original_status else result_status
    if status == "applied":
        return Status.COMPLETED, None
    if status == "rejected":
        return Status.FAILED, reason or "rejected"
    # A duplicate without its original outcome cannot tell; keep waiting for a clear answer.
    return Status.PENDING, None
