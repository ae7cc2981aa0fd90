"""Clocks and ids of the ledger's records."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

from shared.clock import utc_now_ms

__all__ = ["TransactionIds", "new_transaction_id", "utc_now_ms"]


class TransactionIds:
    """Time-ordered ids (48-bit milliseconds, then a counter, then randomness), strictly increasing
    within a process: history sorts newest-first by (timestamp, transaction_id), so the commands of
    one batch, which share a timestamp, keep their order. Only for display: replay and verify
    order transactions by the wallet versions they committed (a clock may step back)."""

    def __init__(self, draws_per_refill: int = 1024) -> None:
        self._last = 0
        self._draws_per_refill = draws_per_refill
        self._random: Iterator[int] = iter(())

    def __call__(self) -> str:
        # The random part comes from the same source as secrets.randbits, drawn for many ids at
        # once: a system call per id was a twentieth of the ledger's time.
        random_bits = next(self._random, None)
        if random_bits is None:
            self._random = iter(
                memoryview(secrets.token_bytes(8 * self._draws_per_refill)).cast("Q")
            )
            random_bits = next(self._random)
        candidate = (time.time_ns() // 1_000_000) << 80 | random_bits
        self._last = max(candidate, self._last + (1 << 64))
        return f"{self._last:032x}"


new_transaction_id = TransactionIds()
