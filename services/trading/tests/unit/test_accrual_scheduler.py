"""The accrual scheduler: catch-up of missed days on start, then 00:00 UTC for each day that ended
(none skipped when a run goes on past midnight, none run twice)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from trading.savings.application.scheduler import AccrualScheduler


class Stop(BaseException):  # not an Exception: the scheduler retries those
    pass


class World:
    """A clock that only moves when the scheduler sleeps, and a record of the days accrued."""

    def __init__(
        self,
        now: datetime,
        *,
        stop_after: int,
        failures: int = 0,
        takes: timedelta = timedelta(0),
        steps: dict[int, timedelta] | None = None,
    ) -> None:
        self.now = now
        self.accrued: list[tuple[date, datetime]] = []
        self.stop_after = stop_after
        self.failures = failures
        self.takes = takes  # how long each successful accrual runs
        self.steps = steps or {}  # after the n-th accrual (from 1), the wall clock is stepped

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
        self.now += self.takes + self.steps.get(len(self.accrued), timedelta(0))
        return {"items": [{"pending": 0}]}


def _scheduler(
    world: World,
    lookback: int,
    newest_completed: Callable[[], Awaitable[list[date | None]]] | None = None,
) -> AccrualScheduler:
    return AccrualScheduler(
        world.accrue,
        clock=world.clock,
        delay=timedelta(seconds=5),
        lookback_days=lookback,
        sleep=world.sleep,
        newest_completed=newest_completed,
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


def _days(start: date, count: int) -> list[date]:
    return [start + timedelta(days=n) for n in range(count)]


async def test_a_catch_up_that_ends_after_midnight_still_accrues_the_day_it_started() -> None:
    # Restarted at 23:58 with a week to catch up, a minute a day: it ends at 00:05 the next day.
    world = World(
        datetime(2026, 11, 30, 23, 58, tzinfo=UTC), stop_after=9, takes=timedelta(minutes=1)
    )
    with pytest.raises(Stop):
        await _scheduler(world, lookback=7).run()
    assert [day for day, _ in world.accrued] == _days(date(2026, 11, 23), 9)
    # 30 Nov ended during the catch-up: accrued as soon as it was over, not a day later.
    assert world.accrued[7] == (date(2026, 11, 30), datetime(2026, 12, 1, 0, 5, tzinfo=UTC))
    assert world.accrued[8] == (date(2026, 12, 1), datetime(2026, 12, 2, 0, 0, 5, tzinfo=UTC))


@pytest.mark.parametrize("midnights", [1, 2])
async def test_a_run_retried_past_midnights_then_accrues_every_day_it_skipped(
    midnights: int,
) -> None:
    # 30 Nov's run (at 1 Dec 00:00:05) finds the history behind for `midnights` days and 2 hours.
    retries = (midnights * 24 + 2) * 120
    world = World(
        datetime(2026, 11, 30, 15, tzinfo=UTC), stop_after=midnights + 2, failures=retries
    )
    with capture_logs() as logs, pytest.raises(Stop):
        await _scheduler(world, lookback=0).run()
    assert len(logs) == retries
    done_at = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC) + timedelta(seconds=30 * retries)
    assert done_at.date() == date(2026, 12, 1 + midnights)
    assert world.accrued == [
        *((day, done_at) for day in _days(date(2026, 11, 30), midnights + 1)),
        (date(2026, 12, 1 + midnights), datetime(2026, 12, 2 + midnights, 0, 0, 5, tzinfo=UTC)),
    ]


async def test_steady_state_accrues_each_day_once_even_when_the_clock_steps_back() -> None:
    # Each run takes ten minutes; after the third the wall clock is stepped back an hour (NTP).
    world = World(
        datetime(2026, 11, 30, 15, tzinfo=UTC),
        stop_after=6,
        takes=timedelta(minutes=10),
        steps={3: -timedelta(hours=1)},
    )
    with pytest.raises(Stop):
        await _scheduler(world, lookback=1).run()
    assert [day for day, _ in world.accrued] == _days(date(2026, 11, 29), 6)
    assert [at for _, at in world.accrued[1:]] == [
        datetime(2026, 12, day, 0, 0, 5, tzinfo=UTC) for day in range(1, 6)
    ]


async def test_a_start_within_the_delay_after_midnight_waits_for_the_day_that_just_ended() -> None:
    # Started 2 s after midnight: the day that ended is accrued at its run time (5 s after), not
    # at once, so events still on their way from the wallet are in the balances it pays on.
    world = World(datetime(2026, 12, 1, 0, 0, 2, tzinfo=UTC), stop_after=3)
    with pytest.raises(Stop):
        await _scheduler(world, lookback=2).run()
    assert world.accrued == [
        (date(2026, 11, 28), datetime(2026, 12, 1, 0, 0, 2, tzinfo=UTC)),
        (date(2026, 11, 29), datetime(2026, 12, 1, 0, 0, 2, tzinfo=UTC)),
        (date(2026, 11, 30), datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)),
    ]


async def test_a_restart_after_an_outage_longer_than_the_lookback_accrues_every_missed_day() -> (
    None
):
    # The newest completed runs: USDT 2 Nov, ETH 10 Nov, BTC never. Restarted on 13 Nov at noon.
    world = World(datetime(2026, 11, 13, 12, tzinfo=UTC), stop_after=12)
    asked: list[datetime] = []

    async def newest_completed() -> list[date | None]:
        asked.append(world.now)
        if len(asked) < 3:
            raise ConnectionError("store away")  # read again, not skipped
        return [date(2026, 11, 2), date(2026, 11, 10), None]

    with capture_logs() as logs, pytest.raises(Stop):
        await _scheduler(world, 7, newest_completed).run()
    assert len(asked) == 3
    assert [day for day, _ in world.accrued] == _days(date(2026, 11, 3), 12)
    (catching_up,) = (log for log in logs if log["event"] == "savings.catching_up")
    assert (catching_up["first"], catching_up["last"], catching_up["days"]) == (
        "2026-11-03",
        "2026-11-12",
        10,
    )
    assert world.accrued[-1] == (date(2026, 11, 14), datetime(2026, 11, 15, 0, 0, 5, tzinfo=UTC))


async def test_completed_runs_within_the_lookback_leave_the_catch_up_as_it_was() -> None:
    world = World(datetime(2026, 11, 13, 12, tzinfo=UTC), stop_after=3)

    async def newest_completed() -> list[date | None]:
        return [date(2026, 11, 12), date(2026, 11, 11)]

    with capture_logs() as logs, pytest.raises(Stop):
        await _scheduler(world, 2, newest_completed).run()
    assert [day for day, _ in world.accrued] == _days(date(2026, 11, 11), 3)
    assert not [log for log in logs if log["event"] == "savings.catching_up"]
