"""Test doubles for the trading features' tests: a clock that moves when told, and a wallet
sender that records commands and answers them with the results a test chooses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.messaging import CommandResult, WalletCommand


@dataclass
class FakeClock:
    """Time that moves only when a test says so."""

    now: datetime = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class RecordingSender:
    """Stands in for the wallet command sender: keeps what was sent; `fail_next` raises once."""

    sent: list[WalletCommand] = field(default_factory=list)
    fail_next: bool = False

    async def send(self, command: WalletCommand) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker away")
        self.sent.append(command)


def result_of(command: WalletCommand, status: str, **extra: Any) -> CommandResult:
    """The wallet's answer to `command` (applied | duplicate | rejected, plus reason, …)."""
    return CommandResult.model_validate(
        {
            "command_id": command.command_id,
            "type": command.type,
            "transaction_type": command.transaction_type,
            "reference_id": command.reference_id,
            "user_id": command.user_id,
            "status": status,
            **extra,
        }
    )
