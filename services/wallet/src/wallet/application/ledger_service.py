"""The batch handler: decide a batch of commands in order and commit it in one atomic write.

Applied commands are guarded by the versions of the wallets they change, so a batch decided on
stale balances is refused and decided again. A rejection changes no wallet and takes effect at the
moment its balances were read: a consistent point, since everything was read before the commit.

Per batch the store is asked three times whatever the batch size: which idempotency keys already
have an outcome, which wallets exist, and the commit. Database round trips, not Python, bound a
ledger, so this is where the speed comes from.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from shared.messaging import (
    BalanceSnapshot,
    CommandResult,
    LedgerTransaction,
    Posting,
    ResultStatus,
    TransferCommand,
    TransferLockedCommand,
    WalletCommand,
)
from shared.money import LEDGER_CONTEXT
from wallet.application.ports import ConcurrencyConflict, LedgerStore, TransientStoreError
from wallet.domain.ledger import (
    ZERO,
    Balances,
    Rejection,
    WalletKey,
    apply_entries,
    decide,
    hold_change,
    wallet_keys,
    with_hold,
)
from wallet.domain.projection import history_rows
from wallet.domain.records import (
    BalanceAfter,
    IdempotencyKey,
    LedgerBatch,
    Outcome,
    WalletRecord,
)

log = structlog.get_logger(__name__)


def utc_now_ms() -> datetime:
    """Now, to the millisecond: what MongoDB stores, so replay and live agree to the digit."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class TransactionIds:
    """Time-ordered ids (48-bit milliseconds, then a counter, then randomness), strictly increasing
    within a process: history sorts newest-first by (timestamp, transaction_id), so the commands of
    one batch, which share a timestamp, keep their order."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> str:
        candidate = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(64)
        self._last = max(candidate, self._last + (1 << 64))
        return f"{self._last:032x}"


new_transaction_id = TransactionIds()


@dataclass(slots=True)
class BatchReport:
    """What a batch produced: one result per command delivered, and the applied transactions."""

    results: list[tuple[str, CommandResult]] = field(default_factory=list)  # (Kafka key, result)
    events: list[LedgerTransaction] = field(default_factory=list)
    attempts: int = 1

    def count(self, status: str) -> int:
        return sum(1 for _, result in self.results if result.status == status)


# The outgoing messages below are built with model_construct: every value comes from a command that
# was validated on the way in or from ledger arithmetic on those, and validating it all again was a
# fifth of the time a batch takes. Serialisation is the same (the serialisers run on dump).


def _snapshot(user_id: str, currency: str, balances: Balances) -> BalanceSnapshot:
    return BalanceSnapshot.model_construct(
        user_id=user_id,
        currency=currency,
        available_balance=balances.available,
        locked_balance=balances.locked,
        savings_balance=balances.savings,
        total_balance=balances.total,
    )


def _result(
    command: WalletCommand,
    status: ResultStatus,
    *,
    now: datetime,
    outcome: Outcome | None = None,
    reason: str | None = None,
    detail: str | None = None,
) -> tuple[str, CommandResult]:
    balances = [
        _snapshot(b.user_id, b.currency, b.balances)
        for b in (outcome.balances_after if outcome else ())
    ]
    result = CommandResult.model_construct(
        command_id=command.command_id,
        type=command.type,
        transaction_type=command.transaction_type,
        reference_id=command.reference_id,
        user_id=command.user_id,
        status=status,
        reason=reason if reason is not None else (outcome.reason if outcome else None),
        detail=detail if detail is not None else (outcome.detail if outcome else None),
        original_status=outcome.status if outcome and status == "duplicate" else None,
        transaction_id=outcome.transaction_id if outcome and outcome.status == "applied" else None,
        balances=balances,
        processed_at=now,
    )
    return command.user_id, result


def ledger_event(outcome: Outcome) -> LedgerTransaction:
    command = outcome.command
    # isinstance, not getattr with a default: a pydantic model's missing attribute is an
    # exception built with a message, which cost a tenth of a batch.
    to_user = (
        command.to_user if isinstance(command, TransferCommand | TransferLockedCommand) else None
    )
    return LedgerTransaction.model_construct(
        transaction_id=outcome.transaction_id,
        command_id=command.command_id,
        type=command.type,
        transaction_type=command.transaction_type,
        reference_id=command.reference_id,
        user_id=command.user_id,
        to_user=to_user,
        postings=[
            Posting.model_construct(account=e.account, currency=e.currency, amount=e.amount)
            for e in outcome.entries
        ],
        metadata=command.metadata,
        occurred_at=outcome.recorded_at,
    )


class _WorkingState:
    """Balances as the batch goes: stored wallets, plus what earlier commands in the batch did."""

    def __init__(self, stored: dict[WalletKey, WalletRecord], now: datetime) -> None:
        self._stored = stored
        self._now = now
        self.current: dict[WalletKey, WalletRecord] = {}

    def record(self, key: WalletKey) -> WalletRecord:
        found = self.current.get(key) or self._stored.get(key)
        if found is None:
            return WalletRecord(key[0], key[1], Balances(), 0, self._now, self._now)
        return found

    def balance_of(self, key: WalletKey) -> Balances:
        return self.record(key).balances

    def hold_of(self, key: WalletKey, reference_id: str) -> Decimal:
        return dict(self.record(key).holds).get(reference_id, ZERO)

    def update(self, key: WalletKey, balances: Balances, hold: tuple[str, Decimal] | None) -> None:
        record = self.record(key)
        self.current[key] = WalletRecord(
            record.user_id,
            record.currency,
            balances,
            record.version + 1,
            record.created_at,
            self._now,
            record.holds if hold is None else with_hold(record.holds, *hold),
        )

    def changed(self) -> tuple[tuple[WalletRecord, int], ...]:
        return tuple(
            (record, self._stored[key].version if key in self._stored else 0)
            for key, record in self.current.items()
        )


class LedgerService:
    """Applies batches of wallet commands exactly once per idempotency key."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        clock: Callable[[], datetime] = utc_now_ms,
        new_id: Callable[[], str] = new_transaction_id,
        max_attempts: int = 8,
        backoff_seconds: float = 0.02,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._max_attempts = max_attempts
        self._backoff_seconds = backoff_seconds

    async def handle_batch(self, commands: Sequence[WalletCommand]) -> BatchReport:
        """Decide and commit; on a conflict with another writer, decide the whole batch again."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                report = await self._decide_and_commit(commands)
            except (ConcurrencyConflict, TransientStoreError) as error:
                if attempt == self._max_attempts:
                    raise
                delay = self._backoff_seconds * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311
                log.warning("ledger_batch_retry", attempt=attempt, error=str(error), delay=delay)
                await asyncio.sleep(delay)
                continue
            report.attempts = attempt
            return report
        raise AssertionError("unreachable")  # pragma: no cover

    async def _decide_and_commit(self, commands: Sequence[WalletCommand]) -> BatchReport:
        now = self._clock()
        keys: list[IdempotencyKey] = list(dict.fromkeys(c.idempotency_key for c in commands))
        known = await self._store.find_outcomes(keys) if keys else {}
        needed = [
            key
            for command in commands
            if command.idempotency_key not in known
            for key in wallet_keys(command)
        ]
        stored = await self._store.find_wallets(list(dict.fromkeys(needed))) if needed else {}
        state = _WorkingState(stored, now)
        report = BatchReport()
        decided: dict[IdempotencyKey, Outcome] = {}
        account_deltas: dict[tuple[str, str], Decimal] = {}

        for command in commands:
            key = command.idempotency_key
            prior = known.get(key) or decided.get(key)
            if prior is not None:
                if prior.fingerprint == command.fingerprint():
                    report.results.append(_result(command, "duplicate", now=now, outcome=prior))
                    if prior.status == "applied" and key in known:
                        # A redelivery may follow a crash between the commit and publishing:
                        # publish the event again (wallet.events is at-least-once, by transaction_id).
                        report.events.append(ledger_event(prior))
                else:
                    report.results.append(
                        _result(
                            command,
                            "rejected",
                            now=now,
                            reason="idempotency_conflict",
                            detail=f"{key} was first used for another request",
                        )
                    )
                continue
            outcome = self._decide_one(command, state, now, account_deltas)
            decided[key] = outcome
            report.results.append(_result(command, outcome.status, now=now, outcome=outcome))
            if outcome.status == "applied":
                report.events.append(ledger_event(outcome))

        if decided:
            outcomes = tuple(decided.values())
            await self._store.commit(
                LedgerBatch(
                    outcomes=outcomes,
                    wallets=state.changed(),
                    history=tuple(row for o in outcomes for row in history_rows(o)),
                    account_deltas=account_deltas,
                )
            )
        return report

    def _decide_one(
        self,
        command: WalletCommand,
        state: _WorkingState,
        now: datetime,
        account_deltas: dict[tuple[str, str], Decimal],
    ) -> Outcome:
        idempotency_key, fingerprint = command.idempotency_key, command.fingerprint()
        transaction_id = self._new_id()
        decision = decide(command, state.balance_of, state.hold_of)
        if isinstance(decision, Rejection):
            current = tuple(
                BalanceAfter(k[0], k[1], state.balance_of(k)) for k in wallet_keys(command)
            )
            return Outcome(
                idempotency_key,
                fingerprint,
                command,
                "rejected",
                transaction_id,
                now,
                balances_after=current,
                reason=decision.reason,
                detail=decision.detail,
            )
        touched, deltas = apply_entries(state.balance_of, decision)
        change = hold_change(command)
        for key, balances in touched.items():
            hold = (change[1], change[2]) if change is not None and change[0] == key else None
            state.update(key, balances, hold)
        for key, delta in deltas.items():
            previous = account_deltas.get(key, ZERO)
            account_deltas[key] = LEDGER_CONTEXT.add(previous, delta)
        after = tuple(BalanceAfter(k[0], k[1], b) for k, b in touched.items())
        return Outcome(
            idempotency_key, fingerprint, command, "applied", transaction_id, now, decision, after
        )
