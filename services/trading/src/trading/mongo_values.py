"""Reading values back from MongoDB: Decimal128 amounts as Decimal, datetimes as UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128


def decimal_of(value: Any) -> Decimal:
    return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))


def utc(value: datetime) -> datetime:
    # Drivers hand back naive datetimes unless the client was made tz-aware; all are UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
