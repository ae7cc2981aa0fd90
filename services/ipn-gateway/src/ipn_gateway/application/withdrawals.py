"""Withdrawal requests and admin decisions; their status follows the wallet's results."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import structlog

from ipn_gateway.application.ports import CommandPublisher, Withdrawals
from ipn_gateway.application.records import OutboxEntry, Withdrawal, WithdrawalPage
from ipn_gateway.domain.errors import Conflict, Forbidden, NotFound, WithdrawalRefused
from ipn_gateway.domain.withdrawals import (
    LOCK_TRANSACTION_TYPE,
    RELEASE_TRANSACTION_TYPE,
    TRANSITIONS,
    UNLOCK_TRANSACTION_TYPE,
    CommandKind,
    Decision,
    WithdrawalPolicy,
    WithdrawalStatus,
    check_limits,
    outcome_of,
    reference_id,
    validate_request,
    withdrawal_id_of,
)
from shared.messaging import (
    CommandResult,
    LockCommand,
    ReleaseLockedCommand,
    UnlockCommand,
    WalletCommand,
    unsendable_reason,
)
from shared.money import add
from shared.outbox import sendable
from shared.paging import PageCursor

# How often an admin's decision on a withdrawal whose lock is in flight looks again.
LOCK_POLL_SECONDS: Final = 0.05
# The most withdrawals one round of asking the wallet again sends a command for.
# Withdrawals an ask-again pass takes (the next pass goes on after them).
ASK_AGAIN_PAGE: Final = 200

log = structlog.get_logger(__name__)

MAX_REASON_LENGTH: Final = 500
# As many as the list returned before it was paged, so existing clients see no change.
DEFAULT_PAGE_SIZE: Final = 200
MAX_PAGE_SIZE: Final = 200

# A stored command the command model refuses, where it would be sent (with its withdrawal).
_UNSENDABLE: Final = "withdrawal.command_unsendable"


@dataclass
class WithdrawalHandler:
    withdrawals: Withdrawals
    publisher: CommandPublisher
    policy: WithdrawalPolicy
    clock: Callable[[], datetime]
    # How long approve/reject wait for the wallet before answering with the withdrawal as it is.
    decision_wait_seconds: float = 5.0
    # A withdrawal waiting on the wallet this long without moving has its last command sent again.
    ask_again_after: timedelta = timedelta(seconds=60)
    ask_again_page: int = ASK_AGAIN_PAGE
    # Where the next ask-again pass goes on, by (updated_at, withdrawal_id).
    _ask_again_cursor: PageCursor[Withdrawal] = field(
        default_factory=lambda: PageCursor(lambda w: (w.updated_at, w.withdrawal_id)), init=False
    )

    async def request(
        self,
        user_id: str,
        currency: object,
        amount: object,
        address: object,
        named_id: str | None = None,
    ) -> Withdrawal:
        """A withdrawal, its amount plus fee locked. With `named_id` (the request's
        Idempotency-Key, named by the route) it is stored under it: a retry that took the key
        over from a request that stopped before answering (or any later request with the key)
        finds that withdrawal, if it asked for the same, instead of locking the money again."""
        valid = validate_request(currency, amount, address, self.policy)
        now = self.clock()
        withdrawal_id = f"wd_{named_id or secrets.token_hex(12)}"
        command = LockCommand(
            user_id=user_id,
            currency=valid.currency,
            amount=valid.locked_amount,
            transaction_type=LOCK_TRANSACTION_TYPE,
            reference_id=reference_id(withdrawal_id),
            metadata={"withdrawal_id": withdrawal_id, "fee": str(valid.fee)},
            issued_at=now,
        )
        withdrawal = Withdrawal(
            withdrawal_id=withdrawal_id,
            user_id=user_id,
            currency=valid.currency,
            amount=valid.amount,
            fee=valid.fee,
            address=valid.address,
            status=WithdrawalStatus.PENDING,
            created_at=now,
            updated_at=now,
            outbox=(OutboxEntry(command, created_at=now),),
        )
        async with self.withdrawals.user_guard(user_id, now):
            # Made before under this name: it is the answer, not counted against the limits again.
            earlier = await self.withdrawals.get(withdrawal_id) if named_id else None
            if earlier is None:
                open_count = await self.withdrawals.open_count(user_id)
                total = await self.withdrawals.total_since(
                    user_id, valid.currency, now - timedelta(hours=24)
                )
                check_limits(valid, open_count, total, self.policy)
                earlier = await self.withdrawals.insert(withdrawal)
        if earlier is not None:
            return await self._made_before(earlier, withdrawal)
        await self._publish(withdrawal_id, command)
        return withdrawal

    async def _made_before(self, stored: Withdrawal, asked: Withdrawal) -> Withdrawal:
        """The withdrawal an earlier request with the same key made, if it asked for the same."""
        same = (stored.user_id, stored.currency, stored.amount, stored.address) == (
            asked.user_id,
            asked.currency,
            asked.amount,
            asked.address,
        )
        if not same:
            raise Conflict("idempotency_conflict", "this Idempotency-Key made another withdrawal")
        for entry in stored.outbox:
            if entry.published:
                continue
            # It stopped before sending: send now, not at the relay's pace.
            command = sendable(entry, _UNSENDABLE, withdrawal_id=stored.withdrawal_id)
            if command is not None:
                await self._publish(stored.withdrawal_id, command)
        return await self.withdrawals.get(stored.withdrawal_id) or stored

    async def approve(self, admin_id: str, withdrawal_id: str) -> Withdrawal:
        withdrawal = await self._get(withdrawal_id)
        if withdrawal.user_id == admin_id:
            raise Forbidden(
                "self_approval_forbidden", "an admin cannot approve their own withdrawal"
            )
        command = _built(
            withdrawal,
            "approve",
            admin_id,
            lambda: ReleaseLockedCommand(
                user_id=withdrawal.user_id,
                currency=withdrawal.currency,
                amount=add(withdrawal.amount, withdrawal.fee),
                fee=withdrawal.fee,
                destination="withdrawals",
                transaction_type=RELEASE_TRANSACTION_TYPE,
                reference_id=reference_id(withdrawal_id, withdrawal.attempt + 1),
                hold_id=reference_id(withdrawal_id),
                metadata={
                    "withdrawal_id": withdrawal_id,
                    "address": withdrawal.address,
                    "approved_by": admin_id,
                },
                issued_at=self.clock(),
            ),
        )
        return await self._decide(withdrawal, "approve", admin_id, None, command)

    async def reject(self, admin_id: str, withdrawal_id: str, reason: str) -> Withdrawal:
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON_LENGTH:
            raise WithdrawalRefused(
                "invalid_reason", f"a reason of 1 to {MAX_REASON_LENGTH} characters is required"
            )
        withdrawal = await self._get(withdrawal_id)
        command = _built(
            withdrawal,
            "reject",
            admin_id,
            lambda: UnlockCommand(
                user_id=withdrawal.user_id,
                currency=withdrawal.currency,
                amount=add(withdrawal.amount, withdrawal.fee),
                transaction_type=UNLOCK_TRANSACTION_TYPE,
                reference_id=reference_id(withdrawal_id, withdrawal.attempt + 1),
                hold_id=reference_id(withdrawal_id),
                metadata={
                    "withdrawal_id": withdrawal_id,
                    "rejected_by": admin_id,
                    "reason": reason,
                },
                issued_at=self.clock(),
            ),
        )
        return await self._decide(withdrawal, "reject", admin_id, reason, command)

    async def get(self, user_id: str, is_admin: bool, withdrawal_id: str) -> Withdrawal:
        withdrawal = await self.withdrawals.get(withdrawal_id)
        if withdrawal is None or (withdrawal.user_id != user_id and not is_admin):
            # Someone else's withdrawal is answered like a missing one: ids are not confirmed.
            raise NotFound("withdrawal_not_found", f"no withdrawal {withdrawal_id[:64]!r}")
        return withdrawal

    async def page(
        self,
        user_id: str,
        is_admin: bool,
        *,
        status: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> WithdrawalPage:
        """A user's own withdrawals, or everyone's for an admin; newest first, a page at a time."""
        try:
            wanted = WithdrawalStatus(status) if status is not None else None
        except ValueError:
            raise WithdrawalRefused(
                "invalid_status", f"unknown status {str(status)[:40]!r}"
            ) from None
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise WithdrawalRefused("invalid_limit", f"limit is 1 to {MAX_PAGE_SIZE}")
        try:
            return await self.withdrawals.page(None if is_admin else user_id, wanted, limit, cursor)
        except ValueError:
            raise WithdrawalRefused("invalid_cursor", "cursor is not one this API gave") from None

    async def apply_result(self, result: CommandResult) -> Withdrawal | None:
        """Move a withdrawal as the wallet's result says; a redelivered result changes nothing."""
        withdrawal_id = withdrawal_id_of(result.reference_id)
        if withdrawal_id is None or result.type not in ("lock", "release_locked", "unlock"):
            return None
        kind: CommandKind = result.type  # type: ignore[assignment]
        withdrawal = await self.withdrawals.get(withdrawal_id)
        if withdrawal is None:
            return None
        if not any(e.command is not None and result.answers(e.command) for e in withdrawal.outbox):
            # The reference names this withdrawal, but it never sent that command (another
            # producer's, or a refusal echoing a malformed message): it says nothing of its money.
            log.warning(
                "withdrawal.foreign_result",
                withdrawal_id=withdrawal_id,
                command_id=result.command_id[:64],
                type=result.type,
                status=result.status,
            )
            return withdrawal
        outcome = outcome_of(result.status, result.reason, result.original_status)
        transition = TRANSITIONS.get((kind, outcome))
        now = self.clock()
        if transition is None:
            # A release or unlock the wallet refused: the money is still locked. The decision is
            # undone so that an admin can decide again (approve once more, or reject).
            note = f"{kind}_rejected: {result.reason or 'unknown'}"
            log.error("withdrawal.decision_refused", withdrawal_id=withdrawal_id, reason=note)
            reopened = await self.withdrawals.reopen(withdrawal_id, result.reference_id, note, now)
            return reopened or await self.withdrawals.get(withdrawal_id)
        from_status, to_status = transition
        reason = result.reason if to_status is WithdrawalStatus.FAILED else None
        moved = await self.withdrawals.transition(
            withdrawal_id, from_status, to_status, reason, now
        )
        if moved is not None:
            log.info("withdrawal.moved", withdrawal_id=withdrawal_id, status=to_status.value)
        return moved

    async def ask_again(self) -> int:
        """Send again the last command of each withdrawal that has waited `ask_again_after` on the
        wallet's answer without moving, at most once per `ask_again_after`.

        The wallet answers a resend with the first outcome (a `duplicate` carrying it in
        `original_status`), so a result that was lost or dead-lettered on its way back moves the
        withdrawal after all, as the first result would have. A command the wallet refused is
        never asked about: its refusal was recorded (the lock's failed the withdrawal, a
        decision's was undone for an admin to decide again), so nothing waits on it. A command
        never published is the outbox relay's to send.

        A pass takes at most `ask_again_page` withdrawals, unmoved the longest first, and the next
        pass goes on after them: however many withdrawals the wallet never answers (each asked
        once per period, unmoved ahead of every newer one), every other gets its turn. A
        withdrawal whose last command cannot be built from what is stored (a value the command
        model now refuses) is logged (`withdrawal.command_unsendable`) and left as it is, and the
        others are still asked.
        """
        asked = 0
        unmoved_since = self.clock() - self.ask_again_after
        page = await self.withdrawals.awaiting_wallet(
            unmoved_since, self.ask_again_page, after=self._ask_again_cursor.after
        )
        self._ask_again_cursor.advance(page, self.ask_again_page)
        for withdrawal in page:
            last = withdrawal.outbox[-1]
            command = sendable(last, _UNSENDABLE, withdrawal_id=withdrawal.withdrawal_id)
            if command is None:
                continue  # left as it is, not marked asked: named again on each pass
            await self.publisher.publish(command)
            await self.withdrawals.mark_asked(withdrawal.withdrawal_id, self.clock())
            log.warning(
                "withdrawal.asked_again",
                withdrawal_id=withdrawal.withdrawal_id,
                type=command.type,
                reference=command.reference_id,
            )
            asked += 1
        return asked

    async def _get(self, withdrawal_id: str) -> Withdrawal:
        withdrawal = await self.withdrawals.get(withdrawal_id)
        if withdrawal is None:
            raise NotFound("withdrawal_not_found", f"no withdrawal {withdrawal_id[:64]!r}")
        return withdrawal

    async def _decide(
        self,
        withdrawal: Withdrawal,
        decision: Decision,
        admin_id: str,
        reason: str | None,
        command: WalletCommand,
    ) -> Withdrawal:
        decided = await self.withdrawals.decide(
            withdrawal.withdrawal_id, decision, admin_id, reason, command, self.clock()
        )
        waited = 0.0
        while decided is None:
            current = await self._get(withdrawal.withdrawal_id)
            if current.status is WithdrawalStatus.PENDING and waited < self.decision_wait_seconds:
                # The lock is in flight: the wallet may already show it (the balance is read
                # there) while its result is on its way here. The admin's decision waits for it
                # rather than being refused for this service lagging a moment behind.
                await asyncio.sleep(LOCK_POLL_SECONDS)
                waited += LOCK_POLL_SECONDS
                decided = await self.withdrawals.decide(
                    withdrawal.withdrawal_id, decision, admin_id, reason, command, self.clock()
                )
                continue
            if current.status is not WithdrawalStatus.LOCKED:
                raise Conflict("not_locked", f"withdrawal is {current.status.value}, not locked")
            if current.decision is None:
                raise Conflict("withdrawal_changed", "the withdrawal changed meanwhile; try again")
            raise Conflict("already_decided", f"an admin already chose to {current.decision} it")
        result = await self._publish(withdrawal.withdrawal_id, command, wait=True)
        if result is not None:
            await self.apply_result(result)
        return await self._get(withdrawal.withdrawal_id)

    async def _publish(
        self, withdrawal_id: str, command: WalletCommand, *, wait: bool = False
    ) -> CommandResult | None:
        # The command is already durable in the withdrawal; on failure the relay publishes it.
        try:
            result = None
            if wait:
                result = await self.publisher.publish_and_wait(command, self.decision_wait_seconds)
            else:
                await self.publisher.publish(command)
            await self.withdrawals.mark_published(withdrawal_id, command.command_id)
            return result
        except Exception:
            log.exception("withdrawal.publish_deferred", withdrawal_id=withdrawal_id)
            return None


def _built(
    withdrawal: Withdrawal, decision: Decision, admin_id: str, build: Callable[[], WalletCommand]
) -> WalletCommand:
    """The decision's wallet command; refused (409) before anything moves when the withdrawal's
    own fields cannot make one (a value an earlier version stored that the command refuses)."""
    try:
        return build()
    except ValueError as error:
        log.error(
            "withdrawal.decision_unsendable",
            withdrawal_id=withdrawal.withdrawal_id,
            decision=decision,
            by=admin_id,
            reason=unsendable_reason(error),
        )
        raise Conflict(
            "withdrawal_unsendable",
            "this withdrawal's wallet command cannot be built from what it holds; "
            "it needs an engineer",
        ) from error
