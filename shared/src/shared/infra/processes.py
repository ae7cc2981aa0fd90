"""Child processes that never outlive their parent.

Every child is started in its own session (so it is its own process group and a terminal's Ctrl-C
reaches only the parent, which then stops children in order), is tracked in a module-wide registry
that an ``atexit`` hook drains, and on Linux is asked to receive SIGKILL if the parent dies without
running that hook (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Final

from shared.infra.net import LOOPBACK, StartupError, port_in_use, wait_until

_PR_SET_PDEATHSIG: Final = 1
_LIVE: set[ManagedProcess] = set()
# Re-entrant: the signal handler may run while the main thread holds it.
_LIVE_LOCK = threading.RLock()


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] | None = getattr(libc, "prctl", None)
    return prctl


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec; it only calls into libc.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """A subprocess in its own process group, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log: IO[bytes] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = log_path.open("ab")
        # The death signal is tied to the thread that forks, so it is only safe from the main
        # thread, which lives as long as the process does.
        on_main = threading.current_thread() is threading.main_thread()
        try:
            self.popen = subprocess.Popen(  # noqa: S603 - argv is built by this package, never a shell
                self.argv,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent if on_main and _PRCTL is not None else None,
            )
        finally:
            if log is not None:
                log.close()
        with _LIVE_LOCK:
            _LIVE.add(self)
        _install_exit_hooks()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, max_bytes: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-max_bytes:]
        return data.decode("utf-8", errors="replace")

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the whole process group: SIGTERM, wait up to ``timeout``, then SIGKILL."""
        try:
            if self.popen.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.popen.wait(timeout)
            # The leader may be gone while something it spawned still holds the group.
            self._signal_group(signal.SIGKILL)
            return self.popen.returncode
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid})"


def stop_together(processes: Sequence[ManagedProcess], timeout: float = 5.0) -> None:
    """Stop several process groups at once: SIGTERM to all, one shared wait, then SIGKILL.

    Stopping one after the other costs each one's shutdown time in turn; a stop that must finish
    within a supervisor's grace period (docker stop, systemd) cannot afford that.
    """
    for process in processes:
        if process.poll() is None:
            process._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(max(0.0, deadline - time.monotonic()))
    for process in processes:
        process.stop(timeout=timeout)  # SIGKILL for what is left, and forget it


def stop_all(timeout: float = 5.0) -> None:
    """Stop every child still running, newest first."""
    with _LIVE_LOCK:
        live = sorted(_LIVE, key=lambda p: p.pid, reverse=True)
    for proc in live:
        proc.stop(timeout)


_hooks_installed = False


def _install_exit_hooks() -> None:
    """Stop children at interpreter exit, and on SIGTERM / SIGHUP where those would just kill us.

    The signal handler is installed only over the default disposition (a program with its own
    handler, such as the launcher's event loop, keeps it). It stops the children and then dies
    by the same signal, so the exit looks as it would have without it.
    """
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _stop_children_then_die)


def _stop_children_then_die(signum: int, frame: FrameType | None) -> None:
    stop_all(timeout=2.0)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) process."""
    if Path("/proc/self/stat").exists():
        try:
            # The state letter follows the parenthesised command name.
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in {"Z", "X"}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until_gone(pids: Sequence[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if pid_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if pid_alive(pid)]
    return alive


class EmbeddedServer(ABC):
    """A server this package runs as a child process on one loopback port until ``stop``."""

    name: str

    def __init__(self, port: int, *, host: str = LOOPBACK, log_dir: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_dir = log_dir
        self.process: ManagedProcess | None = None

    @property
    @abstractmethod
    def address(self) -> str:
        """What clients connect to."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line that serves on ``host:port``."""

    @abstractmethod
    async def ready(self) -> bool:
        """True once the server answers a real request (not merely accepts connections)."""

    async def start(self, within: float = 30.0) -> None:
        if port_in_use(self.host, self.port):
            raise StartupError(
                f"cannot start the embedded {self.name}: {self.host}:{self.port} is already in use"
                " (stop whatever holds it, or point the configuration at it)"
            )
        log_path = self.log_dir / f"{self.name}.log" if self.log_dir else None
        self.process = proc = ManagedProcess(self.name, self.argv(), log_path=log_path)

        async def answers() -> bool:
            # A closed port fails at once; the real probe may wait for its own timeout first.
            return port_in_use(self.host, self.port) and await self.ready()

        await wait_until(
            f"embedded {self.name} on {self.host}:{self.port}",
            answers,
            within=within,
            interval=0.05,
            still_running=lambda: proc.poll() is None,
            diagnostics=proc.log_tail,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
