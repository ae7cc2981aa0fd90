"""Loopback ports and waiting for something to come up."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (the OS picks it, so parallel runs do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class StartupError(RuntimeError):
    """A piece of infrastructure or a service did not become ready."""


async def wait_for_address(
    what: str, probe: Callable[[str], Awaitable[bool]], address: str, *, within: float
) -> None:
    """``wait_until`` for a probe that takes the address it checks."""

    async def answers() -> bool:
        return await probe(address)

    await wait_until(what, answers, within=within, interval=0.2)


async def wait_until(
    what: str,
    probe: Callable[[], Awaitable[bool]],
    *,
    within: float,
    interval: float = 0.1,
    still_running: Callable[[], bool] | None = None,
    diagnostics: Callable[[], str] | None = None,
) -> None:
    """Call ``probe`` until it returns True; fail early if the process behind it has exited."""
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    while True:
        try:
            if await probe():
                return
        except Exception as exc:  # any failure just means "not yet"
            last_error = exc
        if still_running is not None and not still_running():
            detail = diagnostics() if diagnostics is not None else ""
            raise StartupError(f"{what} exited before it was ready\n{detail}".rstrip())
        if time.monotonic() >= deadline:
            detail = diagnostics() if diagnostics is not None else ""
            message = f"{what} not ready after {within:.0f}s (last error: {last_error!r})"
            raise StartupError(f"{message}\n{detail}".rstrip())
        await asyncio.sleep(interval)
