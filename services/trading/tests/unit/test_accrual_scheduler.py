"""The accrual scheduler: catch-up of missed days on start, then 00:00 UTC for the day that ended."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from trading.savings.application.scheduler import AccrualScheduler


class Stop(BaseException):  # not an Exception: the scheduler retries those
    pass


class World:
    """A clock that only moves when the scheduler sleeps, and a record of the days accrued."""

    def __init__(self, now: datetime, *, stop_after: int, failures: int = 0) -> None:
        self.now = now
        self.accrued: list[tuple[date, datetime]] = []
        self.stop_after = stop_after
        self.failures = failures

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)

    async def accrue(self, day: date) -> dict[str, Any]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("history behind")
        self.accrued.append((day, self.now))
        if len(self.accrued) >= self.stop_after:
            raise Stop
        return {"items": [{"pending": 0}]}


def _scheduler(world: World, lookback: int) -> AccrualScheduler:
    return AccrualScheduler(
        world.accrue,
        clock=world.clock,
        delay=timedelta(seconds=5),
        lookback_days=lookback,
        sleep=world.sleep,
    )


async def test_a_restart_catches_up_then_runs_after_each_midnight() -> None:
    world = World(datetime(2026, 11, 30, 15, 0, tzinfo=UTC), stop_after=4)
    with pytest.raises(Stop):
        await _scheduler(world, lookback=2).run()
    days = [day for day, _ in world.accrued]
    assert days == [date(2026, 11, 28), date(2026, 11, 29), date(2026, 11, 30), date(2026, 12, 1)]
    # The catch-up at once; then the day that ended, 5 s after midnight UTC.
    assert world.accrued[0][1] == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    assert world.accrued[2][1] == datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)
    assert world.accrued[3][1] == datetime(2026, 12, 2, 0, 0, 5, tzinfo=UTC)


async def test_a_failed_run_is_retried_not_skipped() -> None:
    world = World(datetime(2026, 11, 30, 23, 59, tzinfo=UTC), stop_after=1, failures=2)
    with pytest.raises(Stop):
        await _scheduler(world, lookback=0).run()
    [(day, at)] = world.accrued
    assert day == date(2026, 11, 30)
    assert at == datetime(2026, 12, 1, 0, 1, 5, tzinfo=UTC)  # two 30 s retries after 00:00:05


async def test_payments_without_a_result_are_sent_again() -> None:
    world = World(datetime(2026, 11, 30, 12, tzinfo=UTC), stop_after=3)
    reports = iter([{"items": [{"pending": 1}]}, {"items": [{"pending": 0}]}])
    original = world.accrue

    async def accrue(day: date) -> dict[str, Any]:
        await original(day)
        return next(reports)

    scheduler = AccrualScheduler(
        accrue, clock=world.clock, delay=timedelta(0), lookback_days=1, sleep=world.sleep
    )
    with pytest.raises(Stop):
        await scheduler.run()
    assert [day for day, _ in world.accrued] == [date(2026, 11, 29)] * 2 + [date(2026, 11, 30)]
