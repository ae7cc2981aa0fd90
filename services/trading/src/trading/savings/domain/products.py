"""Savings products: one per currency, with the annual rate configured for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from shared.money import MoneyError, decimal_places, format_amount, get_currency, parse_decimal

# Every interest record stores the APR it was paid at, exactly (decimal128): one with more
# decimals could not be stored, and every accrual of its currency would fail instead of the
# service refusing it at its start. Between 0 and 1, 18 decimals are at most 19 digits.
APR_MAX_DECIMAL_PLACES: Final = 18


@dataclass(frozen=True, slots=True)
class SavingsProduct:
    currency: str
    apr: Decimal  # a fraction: 0.05 is 5 % a year

    def as_json(self) -> dict[str, str]:
        return {"currency": self.currency, "apr": format_amount(self.apr)}


def parse_aprs(raw: Mapping[str, object]) -> dict[str, Decimal]:
    """Currency → APR, checked: a registered currency, a finite decimal string between 0 and 1
    with at most APR_MAX_DECIMAL_PLACES decimal places (trailing zeros carry none)."""
    aprs: dict[str, Decimal] = {}
    for code, value in raw.items():
        currency = get_currency(code)
        try:
            apr = parse_decimal(value if isinstance(value, Decimal) else str(value))
        except MoneyError as error:
            raise ValueError(f"APR of {currency.code}: {error.message}") from None
        if not Decimal(0) <= apr <= Decimal(1):
            raise ValueError(f"APR of {currency.code} must be between 0 and 1, got {value}")
        if decimal_places(apr) > APR_MAX_DECIMAL_PLACES:
            raise ValueError(
                f"APR of {currency.code} has more than {APR_MAX_DECIMAL_PLACES} decimal places,"
                f" got {value}"
            )
        aprs[currency.code] = apr
    return aprs


def products_from(aprs: Mapping[str, Decimal]) -> list[SavingsProduct]:
    return [SavingsProduct(currency, aprs[currency]) for currency in sorted(aprs)]
