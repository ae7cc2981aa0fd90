"""`make run` with every real service stops cleanly however it is stopped: Ctrl-C (SIGINT to the
foreground process group), SIGTERM to the launcher, and SIGTERM to every process at once (as
docker stop with an init, systemd's control-group kill and CI runners do). Each must leave no
process running and every port free within 10 s."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.infra import free_port, pid_alive
from shared.infra.launcher import SERVICES

STOP_WITHIN_SECONDS = 10.0


@dataclass
class RunningSystem:
    launcher: subprocess.Popen[bytes]
    output: Path
    ports: list[int]

    def processes(self) -> list[int]:
        """The launcher and everything below it: services, their children, the embedded servers."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [self.launcher.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server restarting on it would: TIME_WAIT leftovers do not count as in use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def running_system(tmp_path: Path) -> Iterator[RunningSystem]:
    service_ports = {spec.port_env: free_port() for spec in SERVICES}
    kafka_port, mongodb_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL", "NOWPAYMENTS_API_URL"}
    }
    env.update({k: str(v) for k, v in service_ports.items()}, LOG_LEVEL="WARNING")
    output = tmp_path / "run.out"
    argv = [sys.executable, "-m", "shared.infra.launcher", "--log-dir", str(tmp_path / "logs")]
    argv += ["--kafka-port", str(kafka_port), "--mongodb-port", str(mongodb_port)]
    with output.open("wb") as sink:
        # Its own process group, as a shell gives a foreground job: Ctrl-C reaches the group.
        launcher = subprocess.Popen(
            argv, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    system = RunningSystem(launcher, output, [*service_ports.values(), kafka_port, mongodb_port])
    try:
        deadline = time.monotonic() + 180
        while not re.search(r"^ready", output.read_text(), re.MULTILINE):
            assert launcher.poll() is None, f"make run died:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"make run not ready:\n{output.read_text()}"
            time.sleep(0.2)
        yield system
    finally:
        for pid in system.processes():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


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
