"""Wallet commands go out through the process's one WalletClient, without waiting: the state
they change follows their result on wallet.results."""

from __future__ import annotations

from shared.messaging import WalletCommand
from shared.wallet_client import WalletClient


class WalletCommandSender:
    def __init__(self, wallet: WalletClient) -> None:
        self._wallet = wallet

    async def send(self, command: WalletCommand) -> None:
        await self._wallet.send(command, wait=False)
