"""The built-in feed: a deterministic seeded random walk (no network; prices at once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

from trading.prices.domain import Price, RandomWalk

BUILTIN_SOURCE: Final = "builtin"


class BuiltinPriceSource:
    name = BUILTIN_SOURCE

    def __init__(self, walk: RandomWalk, clock: Callable[[], datetime]) -> None:
        self._walk = walk
        self._clock = clock

    async def fetch(self) -> Sequence[Price]:
        now = self._clock()
        return [
            Price(code, value, now, BUILTIN_SOURCE) for code, value in self._walk.step().items()
        ]
