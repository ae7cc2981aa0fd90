"""What the handlers need from the outside world (the records themselves: records.py).

Every write a handler relies on for correctness is a single-document atomic operation: an insert
on a unique key or a conditional update. A command to the wallet is stored inside the document
whose change caused it (an embedded outbox) in that same write, published afterwards, and marked
published; anything left unmarked by a crash is published again (the wallet dedupes by reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from ipn_gateway.application.records import (
    CreatedPayment,
    DepositOrder,
    IpnRecord,
    OutboxEntry,
    Payment,
    ReviewItem,
    ReviewNote,
    ReviewStatus,
    Withdrawal,
    WithdrawalPage,
)
from ipn_gateway.domain.js_json import JsonValue
from ipn_gateway.domain.payments import PaymentState
from ipn_gateway.domain.withdrawals import Decision, WithdrawalStatus
from shared.messaging import CommandResult, WalletCommand
from shared.outbox import Unpublished
from shared.paging import Position


class DepositOrders(Protocol):
    async def add(self, order: DepositOrder) -> None: ...
    async def get(self, order_id: str) -> DepositOrder | None: ...
    async def attach_payment(self, order_id: str, payment: CreatedPayment) -> None: ...

    async def holding(self, payment_id: str) -> str | None:
        """The id of an order that recorded `payment_id` as its payment, if one did."""
        ...

    async def open_older_than(
        self,
        created_before: datetime,
        polled_before: datetime,
        limit: int,
        after: Position | None = None,
    ) -> Sequence[DepositOrder]:
        """Orders with a payment, not closed, created before `created_before` and not polled
        since `polled_before`, oldest first (by `created_at`, then `order_id`), only those after
        `after` (the `(created_at, order_id)` of one this returned) when given."""
        ...

    async def mark_polled(self, order_id: str, now: datetime, *, closed: bool) -> None: ...


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
        parent_payment_id: str | None = None,
    ) -> bool:
        """Store the new state, appending the credit and review note, if the stored version is
        still `expected_version` (None: not stored yet). False when another IPN was faster.

        `parent_payment_id` marks a repeat payment (its order's payment); once given it is kept,
        and None leaves it as stored."""
        ...

    async def open_repeats_older_than(
        self,
        created_before: datetime,
        polled_before: datetime,
        limit: int,
        after: Position | None = None,
    ) -> Sequence[Payment]:
        """Repeat payments (stored with a `parent_payment_id`) whose polling is not closed, first
        stored before `created_before` and not polled since `polled_before`, oldest first (by
        `created_at`, then payment id), only those after `after` (the `(created_at, payment_id)`
        of one this returned) when given."""
        ...

    async def mark_polled(self, payment_id: str, now: datetime, *, closed: bool) -> None:
        """Note that the poller asked about the payment at `now`; `closed`: ask no more. Neither
        its state nor its version changes."""
        ...

    async def mark_published(self, payment_id: str, command_id: str) -> None: ...
    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        """`shared.outbox.Outbox.unpublished`."""
        ...

    async def awaiting_wallet(
        self, unanswered_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Payment]:
        """Payments with a credit published before `unanswered_since` that the wallet has not
        answered, not asked about since then either (`mark_asked`); oldest first (by
        `created_at`, then payment id), only those after `after` when given."""
        ...

    async def mark_asked(self, payment_id: str, now: datetime) -> None:
        """Note that the payment's unanswered credits were sent again at `now`; nothing else
        changes (not its state, nor its version)."""
        ...

    async def record_result(self, result: CommandResult) -> None:
        """Keep the wallet's first final answer beside the credit it answers (`answers`: its
        command id, type and user); a resend's `duplicate` is kept as the outcome it carries."""
        ...

    async def result_of(self, payment_id: str, reference_id: str) -> tuple[str, str | None] | None:
        """The wallet's (status, reason) for a credit of the payment, if it came."""
        ...


class Reviews(Protocol):
    async def add(self, item: ReviewItem) -> bool:
        """Queue the item; False (and nothing changes) when one with its id is queued already."""
        ...

    async def get(self, review_id: str) -> ReviewItem | None: ...
    async def list(self, status: ReviewStatus | None, limit: int) -> Sequence[ReviewItem]: ...

    async def payment_statuses(self, payment_id: str) -> set[str]:
        """The payment statuses the payment's items were queued with (every IPN of a payment not
        tied to its order is an item: for such a payment, all it reported)."""
        ...

    async def close(
        self,
        review_id: str,
        status: ReviewStatus,
        admin_id: str,
        note: str | None,
        now: datetime,
    ) -> ReviewItem | None:
        """Move an open item to `status`; None if it is not open."""
        ...

    async def claim(self, review_id: str, admin_id: str, now: datetime) -> ReviewItem | None:
        """Move an open item to `approving`, recording who decided and when; None if it is not
        open (another admin claimed, approved or dismissed it first)."""
        ...

    async def finish(self, review_id: str) -> ReviewItem | None:
        """Move an `approving` item to `approved` (who decided and when stay the claim's); None if
        it is not `approving`."""
        ...

    async def release(self, review_id: str) -> ReviewItem | None:
        """Move an `approving` item back to `open`, forgetting the claim (for an approval that
        cannot credit anything, so that the item can still be dismissed); None if it is not
        `approving`."""
        ...

    async def mark_published(self, review_id: str, command_id: str) -> None: ...
    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        """`shared.outbox.Outbox.unpublished`."""
        ...


class IpnLog(Protocol):
    async def record(self, entry: IpnRecord) -> None: ...


class DeadLetters(Protocol):
    async def add(self, raw: bytes, reason: str, now: datetime) -> None:
        """Keep a wallet result the gateway could not apply, for a person to look at."""
        ...


class Withdrawals(Protocol):
    async def insert(self, withdrawal: Withdrawal) -> Withdrawal | None:
        """Store a new withdrawal; None when stored, else the one already stored under its id."""
        ...

    async def get(self, withdrawal_id: str) -> Withdrawal | None: ...

    async def page(
        self,
        user_id: str | None,
        status: WithdrawalStatus | None,
        limit: int,
        cursor: str | None,
    ) -> WithdrawalPage:
        """Newest first; `cursor` is the `next_cursor` of the previous page (opaque to callers).
        Raises ValueError for a cursor this store did not make."""
        ...

    async def decide(
        self,
        withdrawal_id: str,
        decision: Decision,
        admin_id: str,
        reason: str | None,
        command: WalletCommand,
        now: datetime,
    ) -> Withdrawal | None:
        """Record an admin's decision and its command if the withdrawal is locked, undecided, and
        its `attempt` is still the one before the command's (it becomes the command's). Its
        `reason` becomes `reason` (None for an approve), replacing a refusal it was reopened with."""
        ...

    async def reopen(
        self, withdrawal_id: str, reference_id: str, reason: str, now: datetime
    ) -> Withdrawal | None:
        """Undo the decision whose command (`reference_id`) the wallet refused, so an admin can
        decide again; None if that decision is no longer the current one."""
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

    async def mark_published(self, withdrawal_id: str, command_id: str) -> None: ...
    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        """`shared.outbox.Outbox.unpublished`."""
        ...

    async def awaiting_wallet(
        self, unmoved_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Withdrawal]:
        """Withdrawals waiting on the wallet's answer to their last command (`awaits_wallet`),
        that command published, neither moved nor asked again since `unmoved_since`; the longest
        unmoved first (by `updated_at`, then `withdrawal_id`), only those after `after` (the
        `(updated_at, withdrawal_id)` of one this returned) when given, at most `limit`."""
        ...

    async def mark_asked(self, withdrawal_id: str, now: datetime) -> None:
        """Note that the withdrawal's last command was sent again at `now` (`asked_at`)."""
        ...

    async def open_count(self, user_id: str) -> int: ...

    async def total_since(self, user_id: str, currency: str, since: datetime) -> Decimal:
        """Amounts plus fees of the user's withdrawals that count against the daily limit."""
        ...

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

    async def payment_status(self, payment_id: str) -> dict[str, JsonValue]:
        """NOWPayments' `GET /v1/payment/{id}`, numbers kept as written (JsonNumber)."""
        ...
