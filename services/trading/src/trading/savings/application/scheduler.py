"""The daily accrual: at 00:00 UTC (plus a small delay) for the day that ended, and on start for
every ended day a stopped service may have missed: each day after every currency's newest
completed run, however long ago, and every day of the lookback. The scheduler remembers the
last day it finished: each time it wakes it accrues every day due since, oldest first, so a run
that goes on past midnight (a long catch-up, a history that stays behind) skips no day. Each
payment has its own key, so catching up a day that was already paid sends nothing; a day whose
run completed (the scheduler's or an operator's, today's included) is final: its run again only
resends the payments whose result was lost or that the wallet failed on without recording an
outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any, Final

import structlog

from trading.savings.domain.accrual import (
    days_due,
    days_to_catch_up,
    last_day_due,
    next_run_at,
)

log = structlog.get_logger(__name__)

# Sleeps are cut into slices so a wall-clock jump (or a test's clock) is noticed.
MAX_SLEEP_SECONDS: Final = 60.0
RETRY_SECONDS: Final = 30.0


class AccrualScheduler:
    def __init__(
        self,
        accrue: Callable[[date], Awaitable[dict[str, Any]]],
        *,
        clock: Callable[[], datetime],
        delay: timedelta,
        lookback_days: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        newest_completed: Callable[[], Awaitable[Iterable[date | None]]] | None = None,
    ) -> None:
        self._accrue = accrue
        self._newest_completed = newest_completed
        self._clock = clock
        self._delay = delay
        self._lookback_days = lookback_days
        self._sleep = sleep

    async def run(self) -> None:
        started = self._clock()
        # Days whose run time passed before the start are the lookback's (none without one),
        # counted back from the newest of them: within the delay after midnight, the day that
        # just ended is not due yet (events of its last moments may still be on their way), and
        # the loop below runs it at its run time.
        last = last_day_due(started, self._delay)
        missed = days_to_catch_up(
            last + timedelta(days=1), self._lookback_days, await self._completed_runs()
        )
        if len(missed) > self._lookback_days:
            log.warning(
                "savings.catching_up",
                first=missed[0].isoformat(),
                last=missed[-1].isoformat(),
                days=len(missed),
            )
        for day in missed:
            await self._accrue_until_done(day)
        while True:
            due = days_due(last, self._clock(), self._delay)
            for day in due:
                await self._accrue_until_done(day)
                last = day
            if due:
                continue  # time went on while they ran: another day may be due already
            at = next_run_at(self._clock(), self._delay)
            while (remaining := (at - self._clock()).total_seconds()) > 0:
                await self._sleep(min(remaining, MAX_SLEEP_SECONDS))

    async def _completed_runs(self) -> list[date | None]:
        """Each currency's newest completed run, read until the store answers: a day missed
        because the store was away at start would never be paid."""
        while self._newest_completed is not None:
            try:
                return list(await self._newest_completed())
            except Exception:
                log.exception("savings.completed_runs_unreadable")
                await self._sleep(RETRY_SECONDS)
        return []

    async def _accrue_until_done(self, day: date) -> None:
        while True:
            try:
                report = await self._accrue(day)
            except Exception:
                log.exception("savings.accrual_failed", day=day.isoformat())
                await self._sleep(RETRY_SECONDS)
                continue
            if all(item["pending"] == 0 for item in report["items"]):
                return
            # Some payments got no result in time: the same keys are sent again.
            await self._sleep(RETRY_SECONDS)
