"""Offers and the amounts of a trade: validation, the fee and the fiat amount (exact Decimal).

fee = amount × fee rate rounded UP to the coin's scale (the platform never undercharges by a
rounding); fiat_amount = amount × price rounded half-up to the fiat's scale (the contract's rule).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal, Inexact, Rounded
from enum import StrEnum
from typing import Final

from p2p.domain.errors import Refused
from shared.money import (
    LEDGER_CONTEXT,
    Currency,
    MoneyError,
    add,
    get_currency,
    max_integer_digits,
    parse_amount,
)

MIN_PAYMENT_WINDOW_MINUTES: Final = 1
MAX_PAYMENT_WINDOW_MINUTES: Final = 60
DEFAULT_PAYMENT_WINDOW_MINUTES: Final = 15
# A price is not an amount of fiat: it may be finer than a penny (cheap coins), within reason.
MAX_PRICE_DECIMALS: Final = 8
MAX_PAYMENT_METHODS: Final = 10
_PAYMENT_METHOD: Final = re.compile(r"[a-z0-9_]{1,64}")
# Products are exact (the ledger's context traps any rounding); only the rounding to a scale that
# the contract asks for may be inexact, with the rounding mode it names.
_ROUNDING: Final = LEDGER_CONTEXT.copy()
_ROUNDING.traps[Inexact] = False
_ROUNDING.traps[Rounded] = False


class OfferStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class OfferTerms:
    """A validated sell offer: what is sold, for which fiat, at which price and limits."""

    currency: str
    fiat_currency: str
    price: Decimal
    min_amount: Decimal
    max_amount: Decimal
    payment_methods: tuple[str, ...]
    payment_window_minutes: int


def _money(raw: object, currency: Currency) -> Decimal:
    try:
        return parse_amount(raw, currency)
    except MoneyError as error:
        raise Refused(error.code, error.message) from None


def _currency(raw: object, kind: str, code: str) -> Currency:
    try:
        currency = get_currency(raw)
    except MoneyError as error:
        raise Refused(error.code, error.message) from None
    if currency.kind != kind:
        raise Refused(code, f"{currency.code} is not a {kind} currency")
    return currency


def offered_coin(raw: object) -> Currency:
    """The coin an offer sells (or a list asks for); raises Refused with a stable code."""
    return _currency(raw, "crypto", "not_a_crypto_currency")


def offered_fiat(raw: object) -> Currency:
    """The fiat an offer is paid in (or a list asks for); raises Refused with a stable code."""
    return _currency(raw, "fiat", "not_a_fiat_currency")


def validate_offer(
    currency: object,
    fiat_currency: object,
    price: object,
    min_amount: object,
    max_amount: object,
    payment_methods: object,
    payment_window_minutes: object,
) -> OfferTerms:
    """Check every field of a new offer; raises Refused with a stable code."""
    coin, fiat = offered_coin(currency), offered_fiat(fiat_currency)
    price_value = _money(price, Currency(fiat.code, MAX_PRICE_DECIMALS, "fiat"))
    low, high = _money(min_amount, coin), _money(max_amount, coin)
    if low > high:
        raise Refused("invalid_amount_range", "min_amount must not exceed max_amount")
    if (
        not isinstance(payment_methods, list | tuple)
        or not 1 <= len(payment_methods) <= MAX_PAYMENT_METHODS
        or not all(isinstance(m, str) and _PAYMENT_METHOD.fullmatch(m) for m in payment_methods)
    ):
        raise Refused(
            "invalid_payment_methods",
            f"1 to {MAX_PAYMENT_METHODS} payment methods, each of a-z, 0-9 and _",
        )
    window = _whole_number(payment_window_minutes)
    if window is None or not MIN_PAYMENT_WINDOW_MINUTES <= window <= MAX_PAYMENT_WINDOW_MINUTES:
        raise Refused(
            "invalid_payment_window",
            f"payment_window_minutes must be an integer from {MIN_PAYMENT_WINDOW_MINUTES} "
            f"to {MAX_PAYMENT_WINDOW_MINUTES}",
        )
    methods: Sequence[str] = payment_methods
    return OfferTerms(
        currency=coin.code,
        fiat_currency=fiat.code,
        price=price_value,
        min_amount=low,
        max_amount=high,
        payment_methods=tuple(dict.fromkeys(methods)),
        payment_window_minutes=window,
    )


@dataclass(frozen=True, slots=True)
class TradeAmounts:
    amount: Decimal
    fee: Decimal
    fiat_amount: Decimal

    @property
    def escrowed(self) -> Decimal:
        """What is locked of the seller's coins: the amount plus the fee the seller pays."""
        return add(self.amount, self.fee)


def check_fee_rate(rate: Decimal) -> Decimal:
    if not rate.is_finite() or not Decimal(0) <= rate < Decimal(1):
        raise ValueError("the fee rate must be at least 0 and below 1")
    return rate


def trade_fee(amount: Decimal, rate: Decimal, currency: Currency) -> Decimal:
    """amount × rate rounded up to the coin's scale."""
    exact = LEDGER_CONTEXT.multiply(amount, rate)
    return exact.quantize(currency.quantum, rounding=ROUND_UP, context=_ROUNDING)


def fiat_amount(amount: Decimal, price: Decimal, fiat: Currency) -> Decimal:
    """amount × price rounded half-up to the fiat's scale."""
    exact = LEDGER_CONTEXT.multiply(amount, price)
    return exact.quantize(fiat.quantum, rounding=ROUND_HALF_UP, context=_ROUNDING)


def trade_amounts(terms: OfferTerms, amount_text: object, fee_rate: Decimal) -> TradeAmounts:
    """The amounts of a trade on an offer; raises Refused when the amount does not fit it."""
    coin, fiat = get_currency(terms.currency), get_currency(terms.fiat_currency)
    amount = _money(amount_text, coin)
    if not terms.min_amount <= amount <= terms.max_amount:
        raise Refused(
            "amount_out_of_range",
            f"this offer takes {terms.min_amount} to {terms.max_amount} {coin.code} per trade",
        )
    fee = trade_fee(amount, fee_rate, coin)
    fiat_value = fiat_amount(amount, terms.price, fiat)
    if fiat_value == 0:
        raise Refused("fiat_amount_too_small", "the fiat amount rounds to zero")
    if fiat_value.adjusted() >= max_integer_digits(fiat):
        raise Refused(
            "fiat_amount_too_large",
            f"the fiat amount must be below 10^{max_integer_digits(fiat)} {fiat.code}",
        )
    try:
        parse_amount(add(amount, fee), coin)  # the escrow must fit the coin too
    except MoneyError as error:
        raise Refused(error.code, error.message) from None
    return TradeAmounts(amount=amount, fee=fee, fiat_amount=fiat_value)


def _whole_number(value: object) -> int | None:
    """A JSON number's value when it is a whole number, however written (`15`, `15.0`, `1.5e1`);
    None for anything else (a fraction, a boolean, a string, NaN or an infinity)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() < 18  # int() of 1E+999999999 would build a billion-digit number
        and value == value.to_integral_value()
    ):
        return int(value)
    return None
