"""Reading values back from MongoDB: Decimal128 amounts as Decimal, datetimes as UTC; and pending
records oldest first (by `created_at`, then `_id`), a page at a time (the shared helpers, under the
names the trading features import)."""

from __future__ import annotations

from shared.mongo import decimal_of as decimal_of
from shared.mongo import oldest_first as oldest_first
from shared.mongo import utc as utc
