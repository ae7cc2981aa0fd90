"""Wallet commands over Kafka through the shared WalletClient."""

from __future__ import annotations

from shared.messaging import CommandResult, WalletCommand
from shared.wallet_client import WalletClient, WalletTimeout


class WalletCommandPublisher:
    def __init__(self, client: WalletClient) -> None:
        self._client = client

    async def publish(self, command: WalletCommand) -> None:
        await self._client.send(command, wait=False)

    async def publish_and_wait(
        self, command: WalletCommand, wait_seconds: float
    ) -> CommandResult | None:
        try:
            return await self._client.send(command, wait=True, result_timeout=wait_seconds)
        except WalletTimeout:
            # Published but unanswered so far: the results consumer applies the answer.
            return None
