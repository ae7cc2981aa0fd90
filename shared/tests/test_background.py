"""A service's background loops go on after a failed run, and stop when the service stops."""

from __future__ import annotations

import asyncio

from shared.background import BackgroundTasks


async def test_a_loop_runs_again_after_a_failure_and_stops_with_the_feature() -> None:
    runs: list[int] = []

    async def action() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ConnectionError("database away")

    background = BackgroundTasks()
    background.every("test-loop", 0.001, action, failure_event="test.loop_failed")
    async with asyncio.timeout(5):
        while len(runs) < 3:
            await asyncio.sleep(0.001)
    assert background.alive()
    await background.stop()
    stopped_at = len(runs)
    await asyncio.sleep(0.01)
    assert len(runs) == stopped_at


async def test_a_task_that_ended_is_not_alive() -> None:
    async def ends() -> None:
        return None

    background = BackgroundTasks()
    background.spawn("test-once", ends())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not background.alive()
    await background.stop()


async def test_a_loop_at_once_runs_before_its_first_interval() -> None:
    runs: list[str] = []

    async def action() -> None:
        runs.append("ran")

    background = BackgroundTasks()
    background.every("test-now", 3600, action, failure_event="test.failed", at_once=True)
    background.every("test-later", 3600, action, failure_event="test.failed")
    for _ in range(3):
        await asyncio.sleep(0)
    assert runs == ["ran"]  # the at-once loop only; the other waits its hour
    await background.stop()
