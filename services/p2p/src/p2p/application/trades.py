"""Trades: create on an offer, the parties' and admins' actions, the clock, the wallet's results.

Each action is decided by the domain's table against the stored status and applied as ONE
conditional update (the expected status in the filter) that also records the wallet command it
causes. A double click finds the trade already moved (a repeat, nothing changes); of two racing
actions the second finds the status changed and is decided again against it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

import structlog
from pydantic import JsonValue

from p2p.application.paging import (
    DEFAULT_PAGE_SIZE,
    check_limit,
    trade_cursor,
    trade_position,
)
from p2p.application.ports import (
    CommandPublisher,
    Expected,
    Offers,
    OutboxEntry,
    Trade,
    TradeChanges,
    Trades,
)
from p2p.domain.errors import Conflict, Forbidden, NotFound, Refused, Unsendable
from p2p.domain.offers import OfferStatus, trade_amounts
from p2p.domain.trades import (
    CANCEL_TRANSACTION_TYPE,
    ESCROW_TRANSACTION_TYPE,
    RELEASE_TRANSACTION_TYPE,
    TRADE_ID_PREFIX,
    TRANSACTION_TYPES,
    Action,
    Actor,
    Command,
    Move,
    Refusal,
    Repeat,
    ResultKind,
    TradeStatus,
    actor_of,
    decide,
    outcome_of,
    result_moves,
)
from shared.messaging import (
    CommandResult,
    LockCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
    unsendable_reason,
)
from shared.money import add
from shared.outbox import sendable
from shared.paging import Page, PageCursor, page_of
from shared.prices import FUTURE_TOLERANCE

log = structlog.get_logger(__name__)

MAX_REASON_LENGTH: Final = 500
# Of racing actions each is decided again on the status the winner left; a handful suffices
# because statuses only move forward (at most a few moves can happen in between).
MAX_ATTEMPTS: Final = 5
SYSTEM_ACTOR: Final = "system"
_REFUSALS: Final = {"forbidden": Forbidden, "not_found": NotFound, "conflict": Conflict}
_RESULT_KINDS: Final[frozenset[str]] = frozenset({"lock", "transfer_locked", "unlock"})


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    is_admin: bool = False


def trade_id_of(reference_id: str) -> str | None:
    return reference_id if reference_id.startswith(TRADE_ID_PREFIX) else None


def _reason(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if len(text) > MAX_REASON_LENGTH:
        raise Refused("invalid_reason", f"a reason has at most {MAX_REASON_LENGTH} characters")
    return text or None


@dataclass
class TradeHandler:
    trades: Trades
    offers: Offers
    publisher: CommandPublisher
    fee_rate: Decimal
    clock: Callable[[], datetime]
    # How long an action waits for the wallet before answering with the trade as it is (202).
    action_wait_seconds: float = 5.0
    # Where the next deadline sweep goes on, by (payment_deadline, trade_id).
    _expire_cursor: PageCursor[Trade] = field(
        default_factory=lambda: PageCursor(lambda t: (t.payment_deadline, t.trade_id)), init=False
    )

    async def create(
        self, buyer_id: str, offer_id: str, amount: object, named_id: str | None = None
    ) -> Trade:
        """A trade on an offer, its seller's escrow lock recorded and sent.

        With `named_id` (the request's Idempotency-Key, named by the route) the trade is stored
        under it: a retry that took over the key from a request that stopped before answering (or
        any later request with the key) finds that trade instead of locking the seller's coins
        again.
        """
        offer = await self.offers.get(offer_id)
        if offer is None:
            raise NotFound("offer_not_found", f"no offer {offer_id[:64]!r}")
        if offer.seller_id == buyer_id:
            raise Forbidden("own_offer", "a seller cannot take their own offer")
        trade_id = f"{TRADE_ID_PREFIX}{named_id or secrets.token_hex(12)}"
        # Made before under this name: it is the answer even if the offer was withdrawn since.
        earlier = await self.trades.get(trade_id) if named_id else None
        if earlier is None and offer.status is not OfferStatus.ACTIVE:
            raise Conflict("offer_not_active", "the offer was withdrawn")
        amounts = trade_amounts(offer.terms, amount, self.fee_rate)
        now = self.clock()
        terms = offer.terms
        lock = LockCommand(
            user_id=offer.seller_id,
            currency=terms.currency,
            amount=amounts.escrowed,
            transaction_type=ESCROW_TRANSACTION_TYPE,
            reference_id=trade_id,
            metadata={"trade_id": trade_id, "offer_id": offer_id, "buyer_id": buyer_id},
            issued_at=now,
        )
        trade = Trade(
            trade_id=trade_id,
            offer_id=offer_id,
            seller_id=offer.seller_id,
            buyer_id=buyer_id,
            currency=terms.currency,
            fiat_currency=terms.fiat_currency,
            price=terms.price,
            amount=amounts.amount,
            fee=amounts.fee,
            fiat_amount=amounts.fiat_amount,
            payment_methods=terms.payment_methods,
            payment_window_minutes=terms.payment_window_minutes,
            payment_deadline=now + timedelta(minutes=terms.payment_window_minutes),
            status=TradeStatus.PENDING_ESCROW,
            created_at=now,
            updated_at=now,
            outbox=(OutboxEntry(lock, created_at=now),),
        )
        stored = earlier if earlier is not None else await self.trades.insert(trade)
        if stored is not None:
            return await self._created_before(stored, trade)
        await self._publish(trade_id, lock)
        return trade

    async def _created_before(self, stored: Trade, asked: Trade) -> Trade:
        """The trade an earlier request with the same key created, if it asked for the same."""
        same = (stored.buyer_id, stored.offer_id, stored.amount) == (
            asked.buyer_id,
            asked.offer_id,
            asked.amount,
        )
        if not same:
            raise Conflict("idempotency_conflict", "this Idempotency-Key created another trade")
        for entry in stored.outbox:
            if entry.published:
                continue
            # It stopped before sending: send now, not at the relay's pace.
            command = sendable(entry, "trade.command_unsendable", trade_id=stored.trade_id)
            if command is not None:
                await self._publish(stored.trade_id, command)
        return await self.trades.get(stored.trade_id) or stored

    async def get(self, caller: Caller, trade_id: str) -> Trade:
        trade = await self.trades.get(trade_id)
        if trade is None or not (
            caller.is_admin or caller.user_id in (trade.buyer_id, trade.seller_id)
        ):
            raise NotFound("trade_not_found", f"no trade {trade_id[:64]!r}")
        return trade

    async def list_own(
        self, caller: Caller, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[Trade]:
        """A page of the trades the caller is a party to (an admin's own only), newest first,
        then by id; `cursor` is the `next_cursor` of the page before."""
        check_limit(limit)
        before = trade_position(cursor) if cursor else None
        found = await self.trades.list_for(caller.user_id, limit + 1, before)
        return page_of(found, limit, trade_cursor)

    async def act(
        self, caller: Caller | None, trade_id: str, action: Action, reason: str | None = None
    ) -> Trade:
        """Do `action` as `caller` (None: the service's clock); the trade after it."""
        reason = _reason(reason)
        if action in (Action.RESOLVE_BUYER, Action.RESOLVE_SELLER) and not (
            caller and caller.is_admin
        ):
            raise Forbidden("admin_required", "only an admin resolves a dispute")
        trade = await self.trades.get(trade_id)
        if trade is None:
            raise NotFound("trade_not_found", f"no trade {trade_id[:64]!r}")
        actor = (
            Actor.CLOCK
            if caller is None
            else actor_of(caller.user_id, caller.is_admin, trade.buyer_id, trade.seller_id)
        )
        acting = SYSTEM_ACTOR if caller is None else caller.user_id
        for _ in range(MAX_ATTEMPTS):
            verdict = decide(trade.status, action, actor, trade.resolution)
            if isinstance(verdict, Refusal):
                raise _REFUSALS[verdict.kind](verdict.code, _describe(trade, action, verdict))
            if isinstance(verdict, Repeat):
                return trade
            try:
                moved = await self._move(trade, action, verdict, acting, reason)
            except Unsendable as refused:
                if caller is not None:  # the sweeper logs its own
                    log.error(
                        "trade.action_unsendable",
                        trade_id=trade_id,
                        action=action.value,
                        by=acting,
                        reason=refused.reason,
                    )
                raise
            if moved is not None:
                return moved
            trade = await self._stored(trade_id)
        raise Conflict("busy", "the trade is changing; try again")

    async def expire_due(self, limit: int = 100) -> int:
        """Cancel the unpaid trades whose payment deadline passed; how many it cancelled.

        A trade whose unlock cannot be built from what is stored (a value the wallet's command
        refuses) is logged as `trade.unlock_unsendable` and left as it is, and the others still
        go. A sweep takes at most `limit` trades, the earliest deadline first, and the next goes
        on after them: however many such trades stay unpaid past their deadline, every other one
        gets its turn."""
        cancelled = 0
        page = await self.trades.due(
            self._deadlines_passed_by(), limit, after=self._expire_cursor.after
        )
        self._expire_cursor.advance(page, limit)
        for trade in page:
            try:
                moved = await self.act(None, trade.trade_id, Action.EXPIRE)
            except Unsendable as refused:
                log.error("trade.unlock_unsendable", trade_id=trade.trade_id, reason=refused.reason)
                continue
            except (Conflict, NotFound) as refused:
                log.info("trade.not_expired", trade_id=trade.trade_id, code=refused.code)
                continue
            if moved.status in (TradeStatus.CANCELLING, TradeStatus.CANCELLED):
                log.info("trade.expired", trade_id=trade.trade_id)
                cancelled += 1
        return cancelled

    def _deadlines_passed_by(self) -> datetime:
        """The instant the sweeper takes a deadline before as passed: this clock less
        FUTURE_TOLERANCE. Every p2p process sweeps, each by its own clock; one running a few
        seconds fast would cancel a trade before the deadline its buyer was shown, and refuse the
        buyer's mark-paid just before it. The sweep interval plus this stays within the 10 s the
        contract allows after a deadline."""
        return self.clock() - FUTURE_TOLERANCE

    async def apply_result(self, result: CommandResult) -> Trade | None:
        """Move a trade as the wallet's result says; a redelivered result changes nothing."""
        trade_id = trade_id_of(result.reference_id)
        if (
            trade_id is None
            or result.transaction_type not in TRANSACTION_TYPES
            or result.type not in _RESULT_KINDS
        ):
            return None
        kind: ResultKind = result.type  # type: ignore[assignment]
        outcome = outcome_of(result.status, result.reason, result.original_status)
        trade = await self.trades.get(trade_id)
        if trade is None:
            return None
        if not any(e.command is not None and result.answers(e.command) for e in trade.outbox):
            # The reference names this trade, but the trade never sent that command: another
            # producer's command, or a refusal echoing a malformed message. It says nothing
            # about this trade's money, which only its own commands move.
            log.warning(
                "trade.foreign_result",
                trade_id=trade_id,
                command_id=result.command_id[:64],
                type=result.type,
                status=result.status,
            )
            return trade
        moves = result_moves(kind, outcome)
        now = self.clock()
        if not moves:
            # A release or unlock the wallet refused: the coins are still locked; ops must look.
            note = f"{kind}_rejected: {result.reason or 'unknown'}"
            log.error("trade.wallet_refused", trade_id=trade_id, note=note)
            await self.trades.note(trade_id, note, now)
            return await self.trades.get(trade_id)
        for move in moves:
            changes: dict[str, str | bool | datetime | None] = {}
            if move.locks_escrow:
                changes["escrow_locked"] = True
            if move.to is TradeStatus.FAILED:
                changes["reason"] = result.reason or "rejected"
            command = self._command(trade, move.command, SYSTEM_ACTOR)
            moved = await self.trades.move(
                trade_id,
                Expected(move.from_status, escrow_locked=move.escrow_locked),
                move.to,
                changes,
                command,
                now,
            )
            if moved is not None:
                log.info("trade.moved", trade_id=trade_id, status=move.to.value)
                if command is not None:
                    await self._publish(trade_id, command)
                return moved
        return await self.trades.get(trade_id)

    async def _move(
        self, trade: Trade, action: Action, move: Move, acting: str, reason: str | None
    ) -> Trade | None:
        now = self.clock()
        expected = Expected(trade.status)
        if action is Action.MARK_PAID:
            if now >= trade.payment_deadline:
                raise Conflict(
                    "payment_deadline_passed", "the payment deadline passed; the trade is cancelled"
                )
            expected = Expected(trade.status, deadline_open_at=now)
        elif action is Action.EXPIRE:
            expected = Expected(trade.status, deadline_passed_at=self._deadlines_passed_by())
        try:
            command = self._command(trade, move.command, acting)
        except ValueError as error:  # a value an earlier version stored; nothing has moved yet
            raise Unsendable(unsendable_reason(error)) from error
        moved = await self.trades.move(
            trade.trade_id, expected, move.to, _changes(action, acting, reason, now), command, now
        )
        if moved is None:
            return None
        log.info("trade.moved", trade_id=trade.trade_id, status=move.to.value, by=acting)
        if command is None:
            return moved
        # The clock does not wait: the sweeper goes on with the next trade, the result follows.
        result = await self._publish(trade.trade_id, command, wait=action is not Action.EXPIRE)
        if result is not None:
            await self.apply_result(result)
        return await self._stored(trade.trade_id)

    def _command(self, trade: Trade, kind: Command | None, acting: str) -> WalletCommand | None:
        # amount + fee is what the lock put under the trade's hold (its reference).
        escrowed = add(trade.amount, trade.fee)
        metadata: dict[str, JsonValue] = {"trade_id": trade.trade_id, "by": acting}
        if kind == "transfer_locked":
            return TransferLockedCommand(
                user_id=trade.seller_id,
                to_user=trade.buyer_id,
                currency=trade.currency,
                amount=escrowed,
                fee=trade.fee,
                transaction_type=RELEASE_TRANSACTION_TYPE,
                reference_id=trade.trade_id,
                metadata=metadata,
                issued_at=self.clock(),
            )
        if kind == "unlock":
            return UnlockCommand(
                user_id=trade.seller_id,
                currency=trade.currency,
                amount=escrowed,
                transaction_type=CANCEL_TRANSACTION_TYPE,
                reference_id=trade.trade_id,
                metadata=metadata,
                issued_at=self.clock(),
            )
        return None

    async def _stored(self, trade_id: str) -> Trade:
        trade = await self.trades.get(trade_id)
        if trade is None:
            raise NotFound("trade_not_found", f"no trade {trade_id[:64]!r}")
        return trade

    async def _publish(
        self, trade_id: str, command: WalletCommand, *, wait: bool = False
    ) -> CommandResult | None:
        # The command is already durable in the trade; on failure the relay publishes it.
        try:
            result = None
            if wait:
                result = await self.publisher.publish_and_wait(command, self.action_wait_seconds)
            else:
                await self.publisher.publish(command)
            await self.trades.mark_published(trade_id, command.command_id)
            return result
        except Exception:
            log.exception("trade.publish_deferred", trade_id=trade_id)
            return None


def _changes(action: Action, acting: str, reason: str | None, now: datetime) -> TradeChanges:
    match action:
        case Action.MARK_PAID:
            return {"paid_at": now}
        case Action.CANCEL:
            return {"cancelled_by": acting, "reason": reason or "cancelled_by_buyer"}
        case Action.EXPIRE:
            return {"cancelled_by": acting, "reason": "payment_deadline_passed"}
        case Action.DISPUTE:
            return {"disputed_by": acting, "reason": reason}
        case Action.RESOLVE_BUYER:
            return {"resolved_by": acting, "resolution": "buyer"}
        case Action.RESOLVE_SELLER:
            return {
                "resolved_by": acting,
                "resolution": "seller",
                "cancelled_by": acting,
                "reason": "dispute_resolved_for_seller",
            }
        case Action.RELEASE:
            return {}


def _describe(trade: Trade, action: Action, refusal: Refusal) -> str:
    if refusal.kind == "conflict":
        return f"cannot {action.value.replace('_', ' ')} a trade that is {trade.status.value}"
    if refusal.kind == "not_found":
        return f"no trade {trade.trade_id!r}"
    return f"{refusal.code.replace('_', ' ')}: not allowed to {action.value.replace('_', ' ')}"
