"""In-memory adapters with the same guarantees as the Mongo ones, for fast tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from ipn_gateway.application.paging import decode_cursor, encode_cursor
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
from ipn_gateway.domain.errors import Conflict
from ipn_gateway.domain.payments import PaymentState
from ipn_gateway.domain.withdrawals import (
    COUNTED_AGAINST_LIMIT,
    OPEN_STATUSES,
    Decision,
    WithdrawalStatus,
    attempt_of,
    awaits_wallet,
    outcome_of,
)
from shared.messaging import CommandResult, WalletCommand
from shared.money import add
from shared.outbox import Unpublished, unpublished_page
from shared.paging import Position

# Where a payment made without a creation time (a test's) sorts among the unpublished.
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _mark(outbox: tuple[OutboxEntry, ...], command_id: str) -> tuple[OutboxEntry, ...]:
    return tuple(replace(e, published=True) if e.command_id == command_id else e for e in outbox)


def _first_answer(result: CommandResult, entry: OutboxEntry) -> bool:
    """Whether `result` answers the entry's command, and is the first answer to it."""
    command = entry.command
    return entry.result_status is None and command is not None and result.answers(command)


class MemoryDepositOrders:
    def __init__(self) -> None:
        self.orders: dict[str, DepositOrder] = {}

    async def add(self, order: DepositOrder) -> None:
        if order.order_id in self.orders:
            raise KeyError(order.order_id)
        self.orders[order.order_id] = order

    async def attach_payment(self, order_id: str, payment: CreatedPayment) -> None:
        self.orders[order_id] = replace(self.orders[order_id], payment=payment)

    async def get(self, order_id: str) -> DepositOrder | None:
        return self.orders.get(order_id)

    async def holding(self, payment_id: str) -> str | None:
        for order in self.orders.values():
            if order.payment is not None and order.payment.payment_id == payment_id:
                return order.order_id
        return None

    async def open_older_than(
        self,
        created_before: datetime,
        polled_before: datetime,
        limit: int,
        after: Position | None = None,
    ) -> Sequence[DepositOrder]:
        due = [
            o
            for o in self.orders.values()
            if o.payment is not None
            and not o.closed
            and o.created_at < created_before
            and (o.polled_at is None or o.polled_at < polled_before)
            and (after is None or (o.created_at, o.order_id) > after)
        ]
        return sorted(due, key=lambda o: (o.created_at, o.order_id))[:limit]

    async def mark_polled(self, order_id: str, now: datetime, *, closed: bool) -> None:
        order = self.orders[order_id]
        self.orders[order_id] = replace(order, polled_at=now, closed=order.closed or closed)


class MemoryPayments:
    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}

    async def get(self, payment_id: str) -> Payment | None:
        return self.payments.get(payment_id)

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
        stored = self.payments.get(state.payment_id)
        if (stored.version if stored else None) != expected_version:
            return False
        self.payments[state.payment_id] = Payment(
            state=state,
            order_id=stored.order_id if stored else order_id,
            user_id=stored.user_id if stored else user_id,
            version=0 if expected_version is None else expected_version + 1,
            outbox=(*(stored.outbox if stored else ()), *((credit,) if credit else ())),
            reviews=(*(stored.reviews if stored else ()), *((review,) if review else ())),
            parent_payment_id=parent_payment_id or (stored.parent_payment_id if stored else None),
            created_at=stored.created_at if stored else now,
            polled_at=stored.polled_at if stored else None,
            poll_closed=stored.poll_closed if stored else False,
            asked_at=stored.asked_at if stored else None,
        )
        return True

    async def open_repeats_older_than(
        self,
        created_before: datetime,
        polled_before: datetime,
        limit: int,
        after: Position | None = None,
    ) -> Sequence[Payment]:
        due = [
            p
            for p in self.payments.values()
            if p.parent_payment_id is not None
            and not p.poll_closed
            and p.created_at is not None
            and p.created_at < created_before
            and (p.polled_at is None or p.polled_at < polled_before)
            and (after is None or (p.created_at, p.state.payment_id) > after)
        ]
        return sorted(due, key=lambda p: (p.created_at, p.state.payment_id))[:limit]

    async def mark_polled(self, payment_id: str, now: datetime, *, closed: bool) -> None:
        payment = self.payments[payment_id]
        self.payments[payment_id] = replace(
            payment, polled_at=now, poll_closed=payment.poll_closed or closed
        )

    async def mark_published(self, payment_id: str, command_id: str) -> None:
        payment = self.payments[payment_id]
        self.payments[payment_id] = replace(payment, outbox=_mark(payment.outbox, command_id))

    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        owners = ((i, p.created_at or _EARLIEST, p.outbox) for i, p in self.payments.items())
        return unpublished_page(owners, older_than, limit, after)

    async def awaiting_wallet(
        self, unanswered_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Payment]:
        found = [
            p
            for p in self.payments.values()
            if any(
                e.published and e.result_status is None and e.created_at < unanswered_since
                for e in p.outbox
            )
            and (p.asked_at is None or p.asked_at < unanswered_since)
            and (after is None or (p.created_at or _EARLIEST, p.state.payment_id) > after)
        ]
        return sorted(found, key=lambda p: (p.created_at or _EARLIEST, p.state.payment_id))[:limit]

    async def mark_asked(self, payment_id: str, now: datetime) -> None:
        self.payments[payment_id] = replace(self.payments[payment_id], asked_at=now)

    async def record_result(self, result: CommandResult) -> None:
        if not result.final:
            return
        status = outcome_of(result.status, result.reason, result.original_status)
        for payment_id, payment in self.payments.items():
            if not any(_first_answer(result, e) for e in payment.outbox):
                continue
            outbox = tuple(
                replace(e, result_status=status, result_reason=result.reason)
                if _first_answer(result, e)
                else e
                for e in payment.outbox
            )
            reviews = payment.reviews
            if status == "rejected":
                detail = f"{result.reference_id}: {result.reason}"
                reviews = (*reviews, ReviewNote("credit_rejected", detail, result.processed_at))
            self.payments[payment_id] = replace(payment, outbox=outbox, reviews=reviews)
            return

    async def result_of(self, payment_id: str, reference_id: str) -> tuple[str, str | None] | None:
        payment = self.payments.get(payment_id)
        for entry in payment.outbox if payment else ():
            stored = entry.as_stored()
            if stored.get("reference_id") == reference_id and entry.result_status is not None:
                return entry.result_status, entry.result_reason
        return None


class MemoryReviews:
    def __init__(self) -> None:
        self.items: dict[str, ReviewItem] = {}

    async def add(self, item: ReviewItem) -> bool:
        if item.review_id in self.items:
            return False
        self.items[item.review_id] = item
        return True

    async def get(self, review_id: str) -> ReviewItem | None:
        return self.items.get(review_id)

    async def payment_statuses(self, payment_id: str) -> set[str]:
        return {i.payment_status for i in self.items.values() if i.payment_id == payment_id}

    async def list(self, status: ReviewStatus | None, limit: int) -> Sequence[ReviewItem]:
        found = [i for i in self.items.values() if status is None or i.status == status]
        return sorted(found, key=lambda i: (i.created_at, i.review_id), reverse=True)[:limit]

    async def close(
        self,
        review_id: str,
        status: ReviewStatus,
        admin_id: str,
        note: str | None,
        now: datetime,
    ) -> ReviewItem | None:
        item = self._in(review_id, "open")
        if item is None:
            return None
        return self._put(
            replace(item, status=status, decided_by=admin_id, decided_at=now, note=note)
        )

    async def claim(self, review_id: str, admin_id: str, now: datetime) -> ReviewItem | None:
        item = self._in(review_id, "open")
        if item is None:
            return None
        return self._put(replace(item, status="approving", decided_by=admin_id, decided_at=now))

    async def finish(self, review_id: str) -> ReviewItem | None:
        item = self._in(review_id, "approving")
        return self._put(replace(item, status="approved")) if item else None

    async def release(self, review_id: str) -> ReviewItem | None:
        item = self._in(review_id, "approving")
        if item is None:
            return None
        return self._put(replace(item, status="open", decided_by=None, decided_at=None))

    def _in(self, review_id: str, status: ReviewStatus) -> ReviewItem | None:
        item = self.items.get(review_id)
        return item if item is not None and item.status == status else None

    def _put(self, item: ReviewItem) -> ReviewItem:
        self.items[item.review_id] = item
        return item

    async def mark_published(self, review_id: str, command_id: str) -> None:
        item = self.items[review_id]
        self.items[review_id] = replace(item, outbox=_mark(item.outbox, command_id))

    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        owners = ((i.review_id, i.created_at, i.outbox) for i in self.items.values())
        return unpublished_page(owners, older_than, limit, after)


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.letters: list[tuple[bytes, str, datetime]] = []

    async def add(self, raw: bytes, reason: str, now: datetime) -> None:
        self.letters.append((raw, reason, now))


class MemoryIpnLog:
    def __init__(self) -> None:
        self.records: list[IpnRecord] = []

    async def record(self, entry: IpnRecord) -> None:
        self.records.append(entry)


class MemoryWithdrawals:
    def __init__(self) -> None:
        self.withdrawals: dict[str, Withdrawal] = {}
        self._guards: set[str] = set()

    async def insert(self, withdrawal: Withdrawal) -> Withdrawal | None:
        stored = self.withdrawals.get(withdrawal.withdrawal_id)
        if stored is None:
            self.withdrawals[withdrawal.withdrawal_id] = withdrawal
        return stored

    async def get(self, withdrawal_id: str) -> Withdrawal | None:
        return self.withdrawals.get(withdrawal_id)

    async def page(
        self,
        user_id: str | None,
        status: WithdrawalStatus | None,
        limit: int,
        cursor: str | None,
    ) -> WithdrawalPage:
        after = decode_cursor(cursor) if cursor else None
        found = sorted(
            (
                w
                for w in self.withdrawals.values()
                if (user_id is None or w.user_id == user_id)
                and (status is None or w.status is status)
                and (after is None or (w.created_at, w.withdrawal_id) < after)
            ),
            key=lambda w: (w.created_at, w.withdrawal_id),
            reverse=True,
        )
        items = tuple(found[:limit])
        more = len(found) > limit
        last = items[-1] if items else None
        next_cursor = encode_cursor(last.created_at, last.withdrawal_id) if more and last else None
        return WithdrawalPage(items, next_cursor)

    async def decide(
        self,
        withdrawal_id: str,
        decision: Decision,
        admin_id: str,
        reason: str | None,
        command: WalletCommand,
        now: datetime,
    ) -> Withdrawal | None:
        current = self.withdrawals.get(withdrawal_id)
        if (
            current is None
            or current.status is not WithdrawalStatus.LOCKED
            or current.decision
            or current.attempt != attempt_of(command.reference_id) - 1
        ):
            return None
        decided = replace(
            current,
            decision=decision,
            decided_by=admin_id,
            # A new decision replaces an earlier one's reason (a refusal it was reopened with).
            reason=reason,
            updated_at=now,
            attempt=current.attempt + 1,
            outbox=(*current.outbox, OutboxEntry(command, created_at=now)),
        )
        self.withdrawals[withdrawal_id] = decided
        return decided

    async def reopen(
        self, withdrawal_id: str, reference_id: str, reason: str, now: datetime
    ) -> Withdrawal | None:
        current = self.withdrawals.get(withdrawal_id)
        if (
            current is None
            or current.status is not WithdrawalStatus.LOCKED
            or current.decision is None
            or current.attempt != attempt_of(reference_id)
        ):
            return None
        reopened = replace(current, decision=None, decided_by=None, reason=reason, updated_at=now)
        self.withdrawals[withdrawal_id] = reopened
        return reopened

    async def transition(
        self,
        withdrawal_id: str,
        from_status: WithdrawalStatus,
        to_status: WithdrawalStatus,
        reason: str | None,
        now: datetime,
    ) -> Withdrawal | None:
        current = self.withdrawals.get(withdrawal_id)
        if current is None or current.status is not from_status:
            return None
        moved = replace(
            current,
            status=to_status,
            reason=reason if reason is not None else current.reason,
            updated_at=now,
        )
        self.withdrawals[withdrawal_id] = moved
        return moved

    async def mark_published(self, withdrawal_id: str, command_id: str) -> None:
        current = self.withdrawals[withdrawal_id]
        self.withdrawals[withdrawal_id] = replace(current, outbox=_mark(current.outbox, command_id))

    async def unpublished(
        self, older_than: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Unpublished]:
        owners = ((w.withdrawal_id, w.created_at, w.outbox) for w in self.withdrawals.values())
        return unpublished_page(owners, older_than, limit, after)

    async def awaiting_wallet(
        self, unmoved_since: datetime, limit: int, after: Position | None = None
    ) -> Sequence[Withdrawal]:
        found = [
            w
            for w in self.withdrawals.values()
            if awaits_wallet(w.status, w.decision)
            and w.outbox
            and w.outbox[-1].published
            and w.updated_at < unmoved_since
            and (w.asked_at is None or w.asked_at < unmoved_since)
            and (after is None or (w.updated_at, w.withdrawal_id) > after)
        ]
        return sorted(found, key=lambda w: (w.updated_at, w.withdrawal_id))[:limit]

    async def mark_asked(self, withdrawal_id: str, now: datetime) -> None:
        current = self.withdrawals[withdrawal_id]
        self.withdrawals[withdrawal_id] = replace(current, asked_at=now)

    async def open_count(self, user_id: str) -> int:
        return sum(
            1
            for w in self.withdrawals.values()
            if w.user_id == user_id and w.status in OPEN_STATUSES
        )

    async def total_since(self, user_id: str, currency: str, since: datetime) -> Decimal:
        total = Decimal(0)
        for w in self.withdrawals.values():
            if (
                w.user_id == user_id
                and w.currency == currency
                and w.created_at >= since
                and w.status in COUNTED_AGAINST_LIMIT
            ):
                total = add(total, add(w.amount, w.fee))
        return total

    @asynccontextmanager
    async def user_guard(self, user_id: str, now: datetime) -> AsyncIterator[None]:
        if user_id in self._guards:
            raise Conflict("withdrawal_in_progress", "another withdrawal request is in progress")
        self._guards.add(user_id)
        try:
            await asyncio.sleep(0)
            yield
        finally:
            self._guards.discard(user_id)


class RecordingPublisher:
    """Publishes nowhere: keeps the commands; `answer` plays the wallet when asked to wait."""

    def __init__(
        self, answer: Callable[[WalletCommand], CommandResult | None] | None = None
    ) -> None:
        self.published: list[WalletCommand] = []
        self.answer = answer
        self.fail_next = 0

    async def publish(self, command: WalletCommand) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("broker unavailable")
        self.published.append(command)

    async def publish_and_wait(
        self, command: WalletCommand, wait_seconds: float
    ) -> CommandResult | None:
        await self.publish(command)
        return self.answer(command) if self.answer else None
