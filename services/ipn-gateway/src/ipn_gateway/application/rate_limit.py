"""A fixed-window rate limit per sender and overall, for posts that are not (yet) trusted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

# Beyond this many distinct senders in one window, new senders share the overall budget only.
MAX_TRACKED_SENDERS: Final = 10_000


@dataclass
class RateLimiter:
    per_sender: int
    overall: int
    window: timedelta
    clock: Callable[[], datetime]
    _window_start: datetime | None = None
    _total: int = 0
    _by_sender: dict[str, int] = field(default_factory=dict)

    def allow(self, sender: str | None) -> bool:
        """Count one request; False when the sender or everyone together is over the limit."""
        now = self.clock()
        if self._window_start is None or now - self._window_start >= self.window:
            self._window_start, self._total = now, 0
            self._by_sender.clear()
        key = sender or "unknown"
        count = self._by_sender.get(key, 0)
        if self._total >= self.overall or count >= self.per_sender:
            return False
        if key in self._by_sender or len(self._by_sender) < MAX_TRACKED_SENDERS:
            self._by_sender[key] = count + 1
        self._total += 1
        return True
