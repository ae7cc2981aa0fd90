"""Exact rounding of a rational amount to a currency's scale (payouts are rounded down)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from shared.money import LEDGER_CONTEXT, Currency


def floor_to_scale(exact: Fraction, currency: Currency) -> Decimal:
    """The largest amount of the currency's scale not above `exact`.

    A Fraction keeps divisions exact: a Decimal quotient rounded to its precision first could
    land on a quantum boundary from below and be floored one unit too high.
    """
    units = exact.numerator * 10**currency.scale // exact.denominator
    return Decimal(units).scaleb(-currency.scale, LEDGER_CONTEXT)
