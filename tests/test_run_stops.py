"""`make run` with every real service stops cleanly however it is stopped: Ctrl-C (SIGINT to the
foreground process group), SIGTERM to the launcher, and SIGTERM to every process at once (as
docker stop with an init, systemd's control-group kill and CI runners do). Each must leave no
process running and every port free within 10 s."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

import pytest

from shared.infra import pid_alive
from shared.infra.launcher import SERVICES
from tests.system import RunningSystem, port_free

STOP_WITHIN_SECONDS = 10.0


def ctrl_c(system: RunningSystem) -> None:
    os.killpg(system.launcher.pid, signal.SIGINT)


def sigterm_to_the_launcher(system: RunningSystem) -> None:
    system.launcher.send_signal(signal.SIGTERM)


def sigterm_to_every_process_at_once(system: RunningSystem) -> None:
    for pid in system.processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(
    "stop", [ctrl_c, sigterm_to_the_launcher, sigterm_to_every_process_at_once]
)
def test_make_run_stops_cleanly(
    running_system: RunningSystem, stop: Callable[[RunningSystem], None]
) -> None:
    text = running_system.output.read_text()
    # Every service whose package exists is running, the simulator included.
    expected = [spec.name for spec in SERVICES if spec.exists()]
    started = [spec.name for spec in SERVICES if f"{spec.name}: http" in text]
    assert "wallet" in started, text
    assert started == expected, text
    everything = running_system.processes()
    assert len(everything) >= 2 + len(started), everything  # launcher, embedded servers, services
    assert not any(port_free(port) for port in running_system.ports[-2:])  # the servers listen

    stop(running_system)
    deadline = time.monotonic() + STOP_WITHIN_SECONDS
    while time.monotonic() < deadline:
        left = [pid for pid in everything if pid_alive(pid)]
        busy = [port for port in running_system.ports if not port_free(port)]
        if not left and not busy:
            break
        time.sleep(0.1)
    else:
        pytest.fail(
            f"after {STOP_WITHIN_SECONDS}s still running: {left}, ports in use: {busy}\n"
            + running_system.output.read_text()
        )
    assert running_system.launcher.wait(timeout=1) in (0, -signal.SIGTERM, -signal.SIGINT)
