"""Reading values back from MongoDB: Decimal128 amounts as Decimal, datetimes as UTC (the shared
readers, under the names the trading features import)."""

from __future__ import annotations

from shared.mongo import decimal_of as decimal_of
from shared.mongo import utc as utc
