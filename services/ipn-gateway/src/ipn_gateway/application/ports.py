"""What the handlers need from the outside world, and the records they keep.

Every write a handler relies on for correctness is a single-document atomic operation: an insert
on a unique key or a conditional update. A command to the wallet is stored inside the document
whose change caused it (an embedded outbox) in that same write, published afterwards, and marked
published; anything left unmarked by a crash is published again (the wallet dedupes by reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from ipn_gateway.domain.payments import PaymentState
from ipn_gateway.domain.withdrawals import Decision, WithdrawalStatus
from shared.messaging import CommandResult, WalletCommand
from shared.money import format_amount


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A wallet command recorded before it is published; `published` once the broker has it."""

    command: WalletCommand
    created_at: datetime
    published: bool = False

    @property
    def command_id(self) -> str:
        return self.command.command_id


@dataclass(frozen=True, slots=True)
class CreatedPayment:
    """What NOWPayments answered to a payment creation."""

    payment_id: str
    pay_address: str
    pay_currency: str
    pay_amount: str
    price_amount: str
    price_currency: str


@dataclass(frozen=True, slots=True)
class DepositOrder:
    """Whose deposit an order id is. Stored before NOWPayments is asked, so that an IPN can be
    matched even if the gateway stops before it records the payment."""

    order_id: str
    user_id: str
    pay_currency: str
    price_amount: str
    price_currency: str
    created_at: datetime
    payment: CreatedPayment | None = None


@dataclass(frozen=True, slots=True)
class ReviewNote:
    """Something a person must look at: an IPN that could not be credited as it stands."""

    code: str
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment as stored: its state, the user it credits, and its credit commands."""

    state: PaymentState
    order_id: str
    user_id: str
    version: int = 0
    outbox: tuple[OutboxEntry, ...] = ()
    reviews: tuple[ReviewNote, ...] = ()


@dataclass(frozen=True, slots=True)
class IpnRecord:
    """One IPN as received, whatever became of it (the audit trail)."""

    received_at: datetime
    raw_body: str  # UTF-8 text, or base64 when it was not UTF-8 (raw_body_base64)
    raw_body_base64: bool
    body_size: int
    headers: Mapping[str, str]
    client_ip: str | None
    trusted: bool  # the signature matched
    verdict: str  # the answer (credited, pending, ...) or the refusal code (invalid_signature, ...)
    payment_id: str | None = None
    payment_status: str | None = None
    order_id: str | None = None
    review_code: str | None = None


@dataclass(frozen=True, slots=True)
class Withdrawal:
    withdrawal_id: str
    user_id: str
    currency: str
    amount: Decimal
    fee: Decimal
    address: str
    status: WithdrawalStatus
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    decision: Decision | None = None
    decided_by: str | None = None
    outbox: tuple[OutboxEntry, ...] = field(default=())

    def public(self) -> dict[str, Any]:
        """The contract's shape of a withdrawal (amounts as strings)."""
        return {
            "withdrawal_id": self.withdrawal_id,
            "user_id": self.user_id,
            "currency": self.currency,
            "amount": format_amount(self.amount),
            "fee": format_amount(self.fee),
            "address": self.address,
            "status": self.status.value,
            "reason": self.reason,
            "decision": self.decision,
            "decided_by": self.decided_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class DepositOrders(Protocol):
    async def add(self, order: DepositOrder) -> None: ...
    async def get(self, order_id: str) -> DepositOrder | None: ...
    async def attach_payment(self, order_id: str, payment: CreatedPayment) -> None: ...


class Payments(Protocol):
    async def get(self, payment_id: str) -> Payment | None: ...

    async def save(
        self,
        state: PaymentState,
        *,
        order_id: str,
        user_id: str,
        expected_version: int | None,
        credit: OutboxEntry | None,
        review: ReviewNote | None,
        now: datetime,
    ) -> bool:
        """Store the new state, appending the credit and review note, if the stored version is
        still `expected_version` (None: not stored yet). False when another IPN was faster."""
        ...

    async def mark_published(self, payment_id: str, command_id: str) -> None: ...
    async def unpublished(self, older_than: datetime) -> Sequence[tuple[str, WalletCommand]]: ...
    async def record_result(self, result: CommandResult) -> None: ...


class IpnLog(Protocol):
    async def record(self, entry: IpnRecord) -> None: ...


class Withdrawals(Protocol):
    async def insert(self, withdrawal: Withdrawal) -> None: ...
    async def get(self, withdrawal_id: str) -> Withdrawal | None: ...
    async def list(self, user_id: str | None, limit: int) -> Sequence[Withdrawal]: ...

    async def decide(
        self,
        withdrawal_id: str,
        decision: Decision,
        admin_id: str,
        reason: str | None,
        command: WalletCommand,
        now: datetime,
    ) -> Withdrawal | None:
        """Record an admin's decision and its command if the withdrawal is locked and undecided."""
        ...

    async def transition(
        self,
        withdrawal_id: str,
        from_status: WithdrawalStatus,
        to_status: WithdrawalStatus,
        reason: str | None,
        now: datetime,
    ) -> Withdrawal | None:
        """Move from `from_status` to `to_status`; None when it is not in `from_status`."""
        ...

    async def note(self, withdrawal_id: str, reason: str, now: datetime) -> None: ...
    async def mark_published(self, withdrawal_id: str, command_id: str) -> None: ...
    async def unpublished(self, older_than: datetime) -> Sequence[tuple[str, WalletCommand]]: ...
    async def open_count(self, user_id: str) -> int: ...
    async def total_since(self, user_id: str, currency: str, since: datetime) -> Decimal: ...

    def user_guard(self, user_id: str, now: datetime) -> AbstractAsyncContextManager[None]:
        """Serialise one user's requests (a lease); raises Conflict when one is in progress."""
        ...


class CommandPublisher(Protocol):
    async def publish(self, command: WalletCommand) -> None:
        """Hand the command to the broker (acknowledged); do not wait for the wallet."""
        ...

    async def publish_and_wait(
        self, command: WalletCommand, wait_seconds: float
    ) -> CommandResult | None:
        """Publish and wait for the wallet's result; None if it did not come in time."""
        ...


class PaymentProvider(Protocol):
    async def create_payment(
        self,
        *,
        price_amount: str,
        price_currency: str,
        pay_currency: str,
        order_id: str,
        order_description: str,
        ipn_callback_url: str,
    ) -> CreatedPayment: ...
