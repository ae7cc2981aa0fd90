"""Keeping values as MongoDB keeps them, for the in-memory stores: instants in UTC to the
millisecond (rounded down), amounts as IEEE 754 decimal128 holds them (BSON's Decimal128)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Final

# IEEE 754 decimal128, trapping what it cannot hold exactly (BSON's encoding of a Decimal).
_DECIMAL128: Final = Context(
    prec=34,
    rounding=ROUND_HALF_EVEN,
    Emin=-6143,
    Emax=6144,
    capitals=1,
    flags=[],
    traps=[InvalidOperation, Overflow, Inexact],
    clamp=1,
)


def stored_instant(value: datetime) -> datetime:
    """The instant as MongoDB keeps it: UTC (a naive one is taken as UTC), whole milliseconds."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def stored_decimal(value: Decimal) -> Decimal:
    """The amount as decimal128 holds it, or `decimal.Inexact` if it cannot exactly."""
    stored = _DECIMAL128.create_decimal(value)
    if stored.is_nan() and stored.as_tuple().digits:
        raise ValueError("NaN with debug payload is not supported")
    return stored
