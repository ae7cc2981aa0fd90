"""A gateway process whose publisher hangs on the first credit: run by test_gateway_crash.py, which
SIGKILLs it while it hangs. Configured from the environment like `python -m ipn_gateway`.

Once the credit is stored (and the publisher was called) it writes the payment id to the file
named by GATEWAY_HANG_MARKER, so the test kills the process at exactly that point.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import uvicorn

from ipn_gateway.application.ports import CommandPublisher
from ipn_gateway.bootstrap import build_gateway, create_gateway_app
from ipn_gateway.settings import GatewaySettings
from shared.messaging import CommandResult, WalletCommand


class HangingPublisher:
    def __init__(self, inner: CommandPublisher, marker: Path) -> None:
        self._inner = inner
        self._marker = marker

    async def publish(self, command: WalletCommand) -> None:
        if command.type == "credit":
            self._marker.write_text(command.reference_id)
            await asyncio.Event().wait()  # never returns: the process is killed here
        await self._inner.publish(command)

    async def publish_and_wait(
        self, command: WalletCommand, wait_seconds: float
    ) -> CommandResult | None:
        return await self._inner.publish_and_wait(command, wait_seconds)


def main() -> None:
    settings = GatewaySettings()
    gateway = build_gateway(settings)
    gateway.handlers.ipn.publisher = HangingPublisher(
        gateway.handlers.ipn.publisher, Path(os.environ["GATEWAY_HANG_MARKER"])
    )
    uvicorn.run(
        create_gateway_app(gateway),
        host="127.0.0.1",
        port=settings.ipn_gateway_http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
