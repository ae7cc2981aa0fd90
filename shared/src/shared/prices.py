"""The rule every reader of `market.prices` holds a price's `as_of` to (docs/architecture.md,
"Prices from the future")."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from shared.logging import get_logger

log = get_logger(__name__)

# How far ahead of the receiving process's clock a price's as_of may be (the clocks of honest
# hosts differ by less). A price stamped further ahead is refused, never clamped to now.
FUTURE_TOLERANCE: Final = timedelta(seconds=5)


def stamped_ahead(currency: str, as_of: datetime, source: str, now: datetime) -> bool:
    """Whether a price is stamped more than FUTURE_TOLERANCE after `now`, the receiver's clock;
    if so it is logged (`prices.future_stamped`) and the caller refuses it. Kept, it would stay
    fresh past its time and hold back every correct price stamped before it."""
    if as_of - now <= FUTURE_TOLERANCE:
        return False
    log.warning(
        "prices.future_stamped",
        currency=currency,
        as_of=as_of.isoformat(),
        source=source,
        now=now.isoformat(),
    )
    return True
