"""`make run` for tests (the `running_system` fixture in tests/conftest.py): the launcher with every
real service, on free ports, in its own process group (as a shell runs a foreground job), torn
down with SIGKILL whatever the test did."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.infra import free_port, pid_alive
from shared.infra.launcher import SERVICES


@dataclass
class RunningSystem:
    launcher: subprocess.Popen[bytes]
    output: Path
    ports: list[int]
    env: dict[str, str]

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


@contextmanager
def started_system(tmp_path: Path) -> Iterator[RunningSystem]:
    """The whole system, ready, in `tmp_path`; killed on exit."""
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
    system = RunningSystem(
        launcher,
        output,
        [*service_ports.values(), kafka_port, mongodb_port],
        {
            **{k: str(v) for k, v in service_ports.items()},
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        },
    )
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


@pytest.fixture
def running_system(tmp_path: Path) -> Iterator[RunningSystem]:
    with started_system(tmp_path) as system:
        yield system


@pytest.fixture(scope="module")
def running_system_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """One start for a whole module (starting costs 20-30 s): its tests must use fresh users."""
    with started_system(tmp_path_factory.mktemp("system")) as system:
        yield system
