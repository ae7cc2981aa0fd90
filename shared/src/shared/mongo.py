"""One way to open MongoDB: timezone-aware UTC datetimes, so nothing naive leaks into the domain;
and reading values back: Decimal128 amounts as Decimal, datetimes as UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128
from pymongo import AsyncMongoClient


def connect(url: str, **options: Any) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(url, tz_aware=True, **options)


def decimal_of(value: Any) -> Decimal:
    return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))


def utc(value: datetime) -> datetime:
    # Drivers hand back naive datetimes unless the client was made tz-aware; all are UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
