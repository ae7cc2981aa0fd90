"""Clocks and ids of the ledger's records."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime


def utc_now_ms() -> datetime:
    """Now, to the millisecond: what MongoDB stores, so replay and live agree to the digit."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class TransactionIds:
    """Time-ordered ids (48-bit milliseconds, then a counter, then randomness), strictly increasing
    within a process: history sorts newest-first by (timestamp, transaction_id), so the commands of
    one batch, which share a timestamp, keep their order. Only for display: replay and verify
    order transactions by the wallet versions they committed (a clock may step back)."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> str:
        candidate = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(64)
        self._last = max(candidate, self._last + (1 << 64))
        return f"{self._last:032x}"


new_transaction_id = TransactionIds()
