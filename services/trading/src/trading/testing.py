"""Test doubles for the trading features' tests: a clock that moves when told, and a wallet
sender that records commands and answers them with the results a test chooses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.messaging import CommandResult, WalletCommand
from shared.messaging.outcomes import UNRECORDED_REFUSAL
from shared.wallet_client import WalletClient, WalletTimeout


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


class AnsweringWallet(WalletClient):
    """A WalletClient that answers every command itself, without Kafka: `applied` unless a test
    queued another answer in `answers` (`rejected`, `duplicate` of an applied one, `timeout`,
    `failed`: a `processing_failed` refusal)."""

    def __init__(self) -> None:
        super().__init__("unused:9092")
        self.sent: list[WalletCommand] = []
        self.answers: list[str] = []

    async def send(
        self, command: WalletCommand, *, wait: bool = True, result_timeout: float | None = None
    ) -> CommandResult | None:
        self.sent.append(command)
        answer = self.answers.pop(0) if self.answers else "applied"
        if answer == "timeout":
            raise WalletTimeout("no result")
        extra: dict[str, Any] = {"transaction_id": uuid.uuid4().hex}
        if answer == "rejected":
            extra["reason"] = "insufficient_platform_funds"
        if answer == "failed":  # the wallet failed on it and recorded no outcome
            answer, extra["reason"] = "rejected", UNRECORDED_REFUSAL
        if answer == "duplicate":
            extra["original_status"] = "applied"
        result = result_of(command, answer, **extra)
        return result if wait else None
