"""Savings products: one per currency, with the annual rate configured for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from shared.money import MoneyError, format_amount, get_currency, parse_decimal


@dataclass(frozen=True, slots=True)
class SavingsProduct:
    currency: str
    apr: Decimal  # a fraction: 0.05 is 5 % a year

    def as_json(self) -> dict[str, str]:
        return {"currency": self.currency, "apr": format_amount(self.apr)}


def parse_aprs(raw: Mapping[str, object]) -> dict[str, Decimal]:
    """Currency → APR, checked: a registered currency, a decimal string between 0 and 1."""
    aprs: dict[str, Decimal] = {}
    for code, value in raw.items():
        currency = get_currency(code)
        try:
            apr = parse_decimal(value if isinstance(value, Decimal) else str(value))
        except MoneyError as error:
            raise ValueError(f"APR of {currency.code}: {error.message}") from None
        if not Decimal(0) <= apr <= Decimal(1):
            raise ValueError(f"APR of {currency.code} must be between 0 and 1, got {value}")
        aprs[currency.code] = apr
    return aprs


def products_from(aprs: Mapping[str, Decimal]) -> list[SavingsProduct]:
    return [SavingsProduct(currency, aprs[currency]) for currency in sorted(aprs)]
