"""Savings use cases: products, transfers (their status follows wallet.results), positions, the
savings history derived from wallet.events, and the daily accrual."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Final

import structlog

from shared.messaging import CommandResult, unsendable_reason
from shared.money import add, format_amount, negate
from shared.paging import PageCursor
from shared.wallet_client import WalletClient, WalletTimeout, send_until_final
from trading.payout_status import PAID, unsettled
from trading.savings.application.ports import (
    AccrualRecord,
    Accruals,
    SavingsHistory,
    TransferRecord,
    Transfers,
)
from trading.savings.domain.accrual import (
    INTEREST_REFERENCE_PREFIX,
    INTEREST_TRANSACTION_TYPE,
    SavingsMovement,
    accrual_cutoff,
    accruals_due,
)
from trading.savings.domain.errors import SavingsConflict, SavingsNotFound, SavingsUnavailable
from trading.savings.domain.products import SavingsProduct, products_from
from trading.savings.domain.transfers import (
    TransferStatus,
    command_type_of,
    reference_id,
    same_transfer,
    status_after,
    transaction_type_of,
    transfer_id_of,
    validate_transfer,
)

log = structlog.get_logger(__name__)

Document = dict[str, Any]
Clock = Callable[[], datetime]
ZERO: Final = Decimal(0)
# Interest claims or payments in flight at once during a run (a payment waits for its result).
ACCRUAL_CONCURRENCY: Final = 16
# Pending transfers a resend pass takes (the next pass goes on after them).
RESEND_PAGE: Final = 100
# A day's payment the wallet answers `processing_failed` (no outcome recorded) is sent again,
# pausing this long times the try's number (`send_until_final`), before it is failed.
UNRECORDED_REFUSAL_PAUSE_SECONDS: Final = 2.0


@dataclass(frozen=True)
class AccrualOutcome:
    reference_id: str
    currency: str
    amount: Decimal
    # paid | failed | pending (no result yet: a rerun sends the same payment again) | unsendable
    # (its credit cannot be built from what is stored: it stays pending, a rerun names it again)
    status: str
    sent: bool  # False: an earlier run had already settled this key, or it could not be sent


class SavingsService:
    def __init__(
        self,
        *,
        transfers: Transfers,
        history: SavingsHistory,
        accruals: Accruals,
        wallet: WalletClient,
        aprs: Mapping[str, Decimal],
        clock: Clock,
        history_caught_up: Callable[[], Awaitable[bool]],
        result_timeout: float,
        unrecorded_refusal_pause: float = UNRECORDED_REFUSAL_PAUSE_SECONDS,
    ) -> None:
        self._transfers = transfers
        self._history = history
        self._accruals = accruals
        self._wallet = wallet
        self._aprs = dict(aprs)
        self._clock = clock
        self._history_caught_up = history_caught_up
        self._result_timeout = result_timeout
        self._unrecorded_refusal_pause = unrecorded_refusal_pause
        # Where the next resend pass goes on, by (created_at, transfer_id).
        self._resend_cursor: PageCursor[TransferRecord] = PageCursor(
            lambda transfer: (transfer["created_at"], transfer["transfer_id"])
        )

    # Products, transfers, positions

    def products(self) -> list[SavingsProduct]:
        return products_from(self._aprs)

    async def request_transfer(
        self,
        user_id: str,
        currency: object,
        amount: object,
        direction: object,
        *,
        named_id: str | None = None,
    ) -> TransferRecord:
        """A new transfer, or with `named_id` (the request's Idempotency-Key, named by the route)
        the transfer made under it before, if it is the same."""
        checked, value, way = validate_transfer(currency, amount, direction, self._aprs)
        now = self._clock()
        transfer_id = uuid.uuid4().hex if named_id is None else named_id
        transfer: TransferRecord = {
            "transfer_id": transfer_id,
            "user_id": user_id,
            "currency": checked.code,
            "amount": value,
            "direction": way,
            "status": TransferStatus.PENDING.value,
            "reason": None,
            "transaction_id": None,
            "created_at": now,
            "updated_at": now,
        }
        # Recorded first: a command whose publication fails is re-sent by `resend_pending`.
        if not await self._transfers.insert(transfer):
            # The key's transfer exists: an earlier request with it stopped without an answer
            # (its command is sent, or resent by `resend_pending`), or the key is being reused.
            earlier = await self._transfers.get(transfer_id)
            if earlier is None or not same_transfer(earlier, user_id, checked.code, value, way):
                raise SavingsConflict(
                    "idempotency_conflict",
                    "this Idempotency-Key was used for a different savings transfer",
                )
            return earlier
        stored = await self._transfers.get(transfer_id)
        assert stored is not None
        try:
            await self._send(stored, wait=False)
        except Exception:
            log.exception("savings.transfer_publish_failed", transfer_id=transfer_id)
        return stored

    async def _send(self, transfer: TransferRecord, *, wait: bool) -> CommandResult | None:
        move = (
            self._wallet.move_to_savings
            if transfer["direction"] == "to_savings"
            else self._wallet.move_from_savings
        )
        return await move(
            user_id=transfer["user_id"],
            currency=transfer["currency"],
            amount=transfer["amount"],
            reference_id=reference_id(transfer["transfer_id"]),
            transaction_type=transaction_type_of(transfer["direction"]),
            metadata={"transfer_id": transfer["transfer_id"]},
            wait=wait,
        )

    async def resend_pending(self, older_than: timedelta, page: int = RESEND_PAGE) -> int:
        """Publishes again what is still pending after `older_than` (the same idempotency key:
        the wallet answers a duplicate with the first outcome); the number sent. A transfer whose
        command cannot be built from what is stored (a value the wallet's command refuses) is
        logged as `savings.transfer_unsendable` and left pending, and the others still go. A pass
        takes at most `page` transfers, oldest first, and the next pass goes on after them:
        however many pending transfers cannot be sent, every other one gets its turn. A transfer
        sent again is stamped (`asked_at`) and sent again at most once per `older_than`."""
        transfers = await self._transfers.pending_before(
            self._clock() - older_than, limit=page, after=self._resend_cursor.after
        )
        self._resend_cursor.advance(transfers, page)
        sent = 0
        for transfer in transfers:
            try:
                await self._send(transfer, wait=False)
            except ValueError as error:
                log.error(
                    "savings.transfer_unsendable",
                    transfer_id=transfer["transfer_id"],
                    reason=unsendable_reason(error),
                )
                continue
            await self._transfers.mark_asked(transfer["transfer_id"], self._clock())
            sent += 1
        return sent

    async def transfer(self, transfer_id: str, user_id: str, *, is_admin: bool) -> TransferRecord:
        found = await self._transfers.get(transfer_id)
        if found is None or (found["user_id"] != user_id and not is_admin):
            raise SavingsNotFound("transfer_not_found", "no such savings transfer")
        return found

    async def positions(self, user_id: str) -> list[dict[str, str]]:
        return [
            {
                "currency": currency,
                "savings_balance": format_amount(balance),
                "interest_earned": format_amount(interest),
            }
            for currency, balance, interest in await self._history.positions(user_id)
        ]

    async def on_transfer_result(self, result: CommandResult) -> None:
        transfer_id = transfer_id_of(result.reference_id)
        if transfer_id is None:
            return  # another service's savings move
        status = status_after(result.status, result.original_status)
        transfer = await self._transfers.get(transfer_id)
        if status is None or transfer is None or transfer["status"] != TransferStatus.PENDING:
            return
        if (result.user_id, result.type) != (
            transfer["user_id"],
            command_type_of(transfer["direction"]),
        ):
            # Another user's command, or another command type, under this reference: not the
            # answer to this transfer's savings_in / savings_out.
            return
        if status is TransferStatus.COMPLETED and result.transaction_id:
            # The balance history first: once a transfer reads completed, positions show it.
            # Negated exactly: a product with -1 would round to the default context's 28 digits.
            amount = transfer["amount"]
            await self._history.record_result(
                SavingsMovement(
                    transaction_id=result.transaction_id,
                    transaction_type=result.transaction_type,
                    user_id=transfer["user_id"],
                    currency=transfer["currency"],
                    amount=amount if transfer["direction"] == "to_savings" else negate(amount),
                    occurred_at=result.processed_at,
                )
            )
        await self._transfers.settle(
            transfer_id,
            status,
            reason=result.reason if status is TransferStatus.FAILED else None,
            transaction_id=result.transaction_id,
            at=self._clock(),
        )

    # The daily accrual

    async def newest_completed_days(self) -> list[date | None]:
        """Each savings currency's newest day whose accrual run completed (None: never one)."""
        return [await self._accruals.newest_completed(currency) for currency in sorted(self._aprs)]

    async def accrue(self, day: date) -> Document:
        """Runs `day`'s accrual for each currency, or finishes the run that completed it there;
        returns what it did."""
        now = self._clock()
        cutoff = accrual_cutoff(day, now)
        if not await self._history_caught_up():
            raise SavingsUnavailable(
                "ledger_history_behind",
                "the savings history has not yet read every ledger event; try again shortly",
            )
        items = []
        for currency in sorted(self._aprs):
            apr = self._aprs[currency]
            records, claimed_earlier = await self._claims(currency, day, apr, cutoff)
            outcomes = await _bounded(self._pay, records)
            items.append(_summary(currency, apr, outcomes, claimed_earlier))
        log.info("savings.accrued", day=day.isoformat(), items=items)
        return {"date": day.isoformat(), "balances_at": cutoff.isoformat(), "items": items}

    async def _claims(
        self, currency: str, day: date, apr: Decimal, cutoff: datetime
    ) -> tuple[list[AccrualRecord], int]:
        """The day's payments in `currency`, and how many of them an earlier run claimed that
        the balances at `cutoff` no longer owe. Once a run has claimed every payment it owed,
        the day is final: later runs (an operator's, the scheduler's after midnight) get the
        records that run claimed, to send again those still unsettled (pending, or failed
        without an outcome), and pay no one and nothing more. Until then each run claims what
        the balances at `cutoff` owe (a claim an interrupted run made keeps its amount) and, all
        claimed, notes the run completed.

        A claim is decided once made: its amount never changes, and its payment may have been
        sent already (a day begun by a version that sent each payment as it claimed it), which
        voiding the record could not undo. So the run that completes the day also takes the
        day's claims its balances do not owe (a saver who took their savings out after an
        interrupted run of the day still running claimed their interest) and sends them with
        their stored figures, as it sends every claim: none is left pending for the run after
        midnight to send.
        """
        if await self._accruals.run_completed(currency, day):
            return await self._accruals.of_day(currency, day), 0
        balances = await self._history.balances(currency, cutoff)
        dues = accruals_due(currency, day, apr, balances)
        records = await _bounded(lambda due: self._accruals.claim(due, self._clock()), dues)
        owed = {due.reference_id for due in dues}
        earlier = [
            record
            for record in await self._accruals.of_day(currency, day)
            if record["reference_id"] not in owed
        ]
        await self._accruals.complete_run(currency, day, self._clock())
        return records + earlier, len(earlier)

    async def _pay(self, record: AccrualRecord) -> AccrualOutcome:
        """Sends an unsettled payment (pending, or failed only because the wallet failed on it
        without recording an outcome) with the figures it was claimed with; a settled one is
        not sent."""
        reference, currency, amount = record["reference_id"], record["currency"], record["amount"]
        if not unsettled(record["status"], record["reason"]):
            return AccrualOutcome(reference, currency, amount, record["status"], False)
        send = partial(
            self._wallet.credit,
            user_id=record["user_id"],
            currency=currency,
            amount=amount,
            transaction_type=INTEREST_TRANSACTION_TYPE,
            reference_id=reference,
            metadata={
                "date": record["date"],
                "apr": format_amount(record["apr"]),
                "savings_balance": format_amount(record["balance"]),
            },
            result_timeout=self._result_timeout,
        )
        try:
            # A passing failure the wallet recorded no outcome for is tried again; the last
            # such answer fails the payment for now, so no day waits for good on it: the next
            # run of the day sends it again, and a later answer settles it.
            result = await send_until_final(
                send, event="savings.interest_not_final", pause=self._unrecorded_refusal_pause
            )
        except WalletTimeout:
            log.warning("savings.interest_result_timeout", reference=reference)
            return AccrualOutcome(reference, currency, amount, "pending", True)
        except ValueError as error:
            # Sending again can never help: the run goes on with the other savers and days, and
            # the payment stays pending for a person to look at.
            log.error(
                "savings.interest_unsendable", reference=reference, reason=unsendable_reason(error)
            )
            return AccrualOutcome(reference, currency, amount, "unsendable", False)
        assert result is not None
        status = await self.settle_interest(result, last_try=True)
        return AccrualOutcome(reference, currency, amount, status or "pending", True)

    async def on_interest_result(self, result: CommandResult) -> None:
        await self.settle_interest(result)

    async def settle_interest(self, result: CommandResult, *, last_try: bool = False) -> str | None:
        """Settles the accrual record (and the history) from the wallet's answer to a payment.
        An answer that is not final (`CommandResult.final`) settles nothing unless it answers
        the run's last try (`_pay`): one read from `wallet.results` while the run is still
        trying must not fail a payment a later try applies."""
        if not result.reference_id.startswith(INTEREST_REFERENCE_PREFIX):
            return None
        record = await self._accruals.get(result.reference_id)
        if record is None or result.type != "credit" or result.user_id != record["user_id"]:
            return None  # not the answer to this payment's credit: it says nothing of it
        if not (result.final or last_try):
            return None
        outcome = result.original_status if result.status == "duplicate" else result.status
        if outcome == "applied":
            if result.transaction_id:
                await self._history.record_result(
                    SavingsMovement(
                        transaction_id=result.transaction_id,
                        transaction_type=INTEREST_TRANSACTION_TYPE,
                        user_id=record["user_id"],
                        currency=record["currency"],
                        amount=record["amount"],
                        occurred_at=result.processed_at,
                    )
                )
            await self._accruals.settle(result.reference_id, PAID, None, self._clock())
            return PAID
        if outcome == "rejected":
            log.error(
                "savings.interest_rejected", reference=result.reference_id, reason=result.reason
            )
            await self._accruals.settle(result.reference_id, "failed", result.reason, self._clock())
            return "failed"
        return None


async def _bounded[T, R](work: Callable[[T], Awaitable[R]], items: Iterable[T]) -> list[R]:
    """`work` on each item, at most ACCRUAL_CONCURRENCY at once; the results in the items' order."""
    limit = asyncio.Semaphore(ACCRUAL_CONCURRENCY)

    async def one(item: T) -> R:
        async with limit:
            return await work(item)

    return await asyncio.gather(*(one(item) for item in items))


def _summary(
    currency: str, apr: Decimal, outcomes: list[AccrualOutcome], claimed_earlier: int
) -> dict[str, Any]:
    paid_now = [o for o in outcomes if o.sent and o.status == "paid"]
    total = ZERO
    for outcome in paid_now:
        total = add(total, outcome.amount)
    return {
        "currency": currency,
        "apr": format_amount(apr),
        "accounts_owed": len(outcomes),
        "paid": len(paid_now),
        "paid_amount": format_amount(total),
        "already_settled": sum(1 for o in outcomes if not o.sent and o.status != "unsendable"),
        "pending": sum(1 for o in outcomes if o.status == "pending"),
        "failed": sum(1 for o in outcomes if o.sent and o.status == "failed"),
        "unsendable": sum(1 for o in outcomes if o.status == "unsendable"),
        "claimed_earlier": claimed_earlier,
    }
