"""Money: the currency registry and exact amount parsing.

Amounts are `Decimal` in code and decimal strings on the wire. Parsing never rounds: a value that does
not fit its currency is refused with a machine-readable code, so callers can tell the user why.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

CurrencyKind = Literal["crypto", "fiat"]


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    scale: int  # decimal places the currency can hold; more is refused, never rounded
    kind: CurrencyKind

    @property
    def quantum(self) -> Decimal:
        # Built once per scale (a Decimal is immutable): building it was a fifth of parse_amount.
        quantum = _QUANTA.get(self.scale)
        if quantum is None:
            quantum = _QUANTA[self.scale] = Decimal(1).scaleb(-self.scale)
        return quantum


_QUANTA: dict[int, Decimal] = {}


CURRENCIES: Final[dict[str, Currency]] = {
    c.code: c
    for c in (
        Currency("BTC", 8, "crypto"),
        Currency("ETH", 18, "crypto"),
        Currency("USDT", 6, "crypto"),
        Currency("USDC", 6, "crypto"),
        Currency("LTC", 8, "crypto"),
        Currency("TRX", 6, "crypto"),
        Currency("SOL", 9, "crypto"),
        Currency("GBP", 2, "fiat"),
        Currency("EUR", 2, "fiat"),
        Currency("USD", 2, "fiat"),
    )
}

# NOWPayments names a token by ticker plus network; the ledger keeps one balance per asset.
NOWPAYMENTS_TICKERS: Final[dict[str, str]] = {
    "usdttrc20": "USDT",
    "usdterc20": "USDT",
    "usdtbsc": "USDT",
    "usdtsol": "USDT",
    "usdtmatic": "USDT",
    "usdcerc20": "USDC",
    "usdcsol": "USDC",
    "usdcmatic": "USDC",
    "usdcbsc": "USDC",
    "ethbsc": "ETH",
    "trc20": "TRX",
}

# Beyond 10^18 units no real balance exists. A currency with many decimals gets fewer integer digits
# so that an amount, and a balance summed from many, fits Decimal128's 34 digits: storage stays exact.
MAX_INTEGER_DIGITS: Final = 18
DECIMAL128_DIGITS: Final = 34
# A longer string is refused before it is parsed: 5,000-digit numbers must cost nothing.
MAX_AMOUNT_TEXT: Final = 64

# ASCII digits only: Decimal() also reads other scripts' digits, which no client means to send.
_AMOUNT_SYNTAX: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_SPECIAL_VALUES: Final = re.compile(r"[+-]?(?:s?nan\d*|inf|infinity)", re.IGNORECASE)
# Enough precision that no amount we accept is ever rounded by arithmetic; Inexact traps anyway.
LEDGER_CONTEXT: Final = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow, decimal.DivisionByZero],
)


class MoneyError(ValueError):
    """A refused currency or amount; `code` is machine-readable and stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def get_currency(code: object) -> Currency:
    """The registered currency for a code ("btc", "BTC") or a NOWPayments ticker ("usdttrc20")."""
    if not isinstance(code, str) or not code or len(code) > 20:
        raise MoneyError("unknown_currency", f"unknown currency: {str(code)[:20]!r}")
    upper = code.strip().upper()
    currency = CURRENCIES.get(upper)
    if currency is None:
        mapped = NOWPAYMENTS_TICKERS.get(code.strip().lower())
        currency = CURRENCIES.get(mapped) if mapped else None
    if currency is None:
        raise MoneyError("unknown_currency", f"unknown currency: {code[:20]!r}")
    return currency


def is_decimal_text(text: str) -> bool:
    """Whether `text` is written as the system writes and accepts amounts: ASCII digits, an
    optional sign, point and short exponent (`Decimal()` also reads `1_000` and other scripts'
    digits)."""
    return _AMOUNT_SYNTAX.fullmatch(text) is not None


def parse_decimal(raw: object) -> Decimal:
    """A finite decimal from a string (or a Decimal from code); floats and JSON numbers are refused.

    Checks syntax and range only; `parse_amount` adds the currency's scale and the sign rule.
    """
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip()
        if len(text) > MAX_AMOUNT_TEXT:
            raise MoneyError(
                "amount_too_long", f"amount has more than {MAX_AMOUNT_TEXT} characters"
            )
        # The syntax first: what matches it (digits) cannot be a special value (letters).
        if not is_decimal_text(text):
            if _SPECIAL_VALUES.fullmatch(text):
                code = "amount_not_a_number" if "nan" in text.lower() else "amount_infinite"
                raise MoneyError(code, f"amount must be a finite number, got {text!r}")
            raise MoneyError("amount_malformed", f"amount is not a decimal number: {text!r}")
        value = Decimal(text)
    elif isinstance(raw, bool | int | float):
        # JSON numbers lose precision in most clients (and floats already have): strings only.
        raise MoneyError("amount_not_a_string", 'amount must be a decimal string such as "0.01"')
    else:
        raise MoneyError("amount_malformed", "amount must be a decimal string")
    if value.is_nan():
        raise MoneyError("amount_not_a_number", "amount must be a finite number, got NaN")
    if value.is_infinite():
        raise MoneyError("amount_infinite", "amount must be a finite number, got Infinity")
    if value != 0 and value.adjusted() >= MAX_INTEGER_DIGITS:
        raise MoneyError(
            "amount_too_large", f"amount must be below 10^{MAX_INTEGER_DIGITS}, got {raw!s:.40}"
        )
    return value


def max_integer_digits(currency: Currency) -> int:
    # One digit of headroom for balances that sum many amounts.
    return min(MAX_INTEGER_DIGITS, DECIMAL128_DIGITS - 1 - currency.scale)


def decimal_places(value: Decimal) -> int:
    """Decimal places that carry information ("1.50" has 1); trailing zeros carry none."""
    if value == 0:
        return 0
    # From the digits themselves: normalising in a context could round (and trap) a value with
    # more significant digits than its precision, which a 64-character amount can have.
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite by construction
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros))


def check_scale(value: Decimal, currency: Currency) -> None:
    if decimal_places(value) > currency.scale:
        try:
            shown = format_amount(value)
        except decimal.DecimalException:  # more significant digits than normalising can hold
            shown = format(value, "f")[:37] + "..."
        raise MoneyError(
            "amount_too_precise",
            f"{currency.code} has {currency.scale} decimal places; {shown} has more",
        )


def parse_amount(raw: object, currency: Currency | str, *, allow_zero: bool = False) -> Decimal:
    """An exact positive amount of `currency` (zero too with allow_zero), quantized to its scale."""
    cur = currency if isinstance(currency, Currency) else get_currency(currency)
    value = parse_decimal(raw)
    if value < _ZERO or (value == _ZERO and not allow_zero) or value.is_signed():
        raise MoneyError(
            "amount_not_positive",
            "amount must be greater than zero" if not allow_zero else "amount must not be negative",
        )
    # The scale check without normalising (a third of the cost): a value that fits the scale
    # quantizes to itself exactly (it is the result, too); one that does not, or that quantizing
    # could not even hold, is checked (and refused) by check_scale as before.
    quantized = value.quantize(cur.quantum, context=_QUANTIZING)
    if quantized != value:
        check_scale(value, cur)
    if value != _ZERO and value.adjusted() >= max_integer_digits(cur):
        raise MoneyError(
            "amount_too_large", f"{cur.code} amounts must be below 10^{max_integer_digits(cur)}"
        )
    if quantized != value:  # pragma: no cover  # check_scale refused it above
        return value.quantize(cur.quantum, context=LEDGER_CONTEXT)
    return quantized


_ZERO: Final = Decimal(0)
# LEDGER_CONTEXT's precision, no traps: parse_amount compares what quantizing gave to the value.
_QUANTIZING: Final = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN, traps=[])


def format_amount(value: Decimal) -> str:
    """Plain decimal notation without trailing zeros ("0.01", "100", "0"): the wire form."""
    if type(value) is Decimal:
        # The common case, at half the cost (every amount of every outgoing message): zero, or a
        # plain decimal string with a point and under 60 characters (so normalising cannot
        # round), whose trailing zeros are all normalising takes away.
        if not value:
            return "0"
        text = str(value)
        if "." in text and "E" not in text and len(text) <= 60:
            return text.rstrip("0").rstrip(".")
    if value == 0:
        return "0"
    return format(value.normalize(LEDGER_CONTEXT), "f")


def add(a: Decimal, b: Decimal) -> Decimal:
    """Exact sum; raises instead of rounding if it ever would."""
    return LEDGER_CONTEXT.add(a, b)


def subtract(a: Decimal, b: Decimal) -> Decimal:
    return LEDGER_CONTEXT.subtract(a, b)


def negate(a: Decimal) -> Decimal:
    return LEDGER_CONTEXT.minus(a) if a != 0 else Decimal(0)
