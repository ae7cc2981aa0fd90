"""Service clocks as MongoDB keeps instants: whole milliseconds.

A create answers the instants it stores; MongoDB keeps them to the millisecond, so a clock with
microseconds made the answer differ from every later read of the same record, and a deadline be
enforced up to a millisecond earlier than the one the user was told.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

type Clock = Callable[[], datetime]


def utc_now_ms() -> datetime:
    """Now, in UTC, rounded down to the millisecond."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_the_millisecond(clock: Clock) -> Clock:
    """`clock`, each instant rounded down to the millisecond (a clock already so is unchanged)."""

    def now() -> datetime:
        instant = clock()
        return instant.replace(microsecond=instant.microsecond // 1000 * 1000)

    return now
