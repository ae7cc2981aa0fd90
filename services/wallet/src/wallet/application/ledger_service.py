"""The batch handler: decide a batch of commands in order and commit it in one atomic write.

Applied commands are guarded by the versions of the wallets they change (and by the floors of the
platform accounts they spend), so a batch decided on stale balances is refused and decided again.
A rejection changes no wallet and takes effect at the moment its balances were read: a consistent
point, since everything was read before the commit.

Per batch the store is asked three times whatever the batch size: which idempotency keys already
have an outcome, which wallets (and floored platform accounts) exist, and the commit. Database
round trips, not Python, bound a ledger, so this is where the speed comes from.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from shared.messaging import CommandResult, LedgerTransaction, WalletCommand, canonical_fingerprint
from wallet.application.ids import new_transaction_id, utc_now_ms
from wallet.application.messages import command_result, ledger_event
from wallet.application.ports import (
    ConcurrencyConflict,
    LedgerStore,
    StoreTimeout,
    TransientStoreError,
)
from wallet.application.working_state import WorkingState
from wallet.domain.ledger import (
    AccountKey,
    Rejection,
    WalletKey,
    apply_entries,
    decide,
    floored_accounts,
    hold_changes,
    wallet_keys,
)
from wallet.domain.projection import history_rows
from wallet.domain.records import (
    BalanceAfter,
    IdempotencyKey,
    LedgerBatch,
    Outcome,
    StoredBalances,
)

log = structlog.get_logger(__name__)

# MongoDB keeps milliseconds: the least step that orders two stored instants.
_MILLISECOND = timedelta(milliseconds=1)

# Re-exported for the modules and tests that take them from here.
__all__ = ["BatchReport", "LedgerService", "ledger_event", "new_transaction_id", "utc_now_ms"]


@dataclass(slots=True)
class BatchReport:
    """What a batch produced: one result per command delivered, and the applied transactions."""

    results: list[tuple[str, CommandResult]] = field(default_factory=list)  # (Kafka key, result)
    events: list[LedgerTransaction] = field(default_factory=list)
    attempts: int = 1
    splits: int = 0  # times the batch was halved because the store kept timing out

    def count(self, status: str) -> int:
        return sum(1 for _, result in self.results if result.status == status)

    def then(self, later: BatchReport) -> BatchReport:
        """This report followed by a later part's."""
        return BatchReport(
            [*self.results, *later.results],
            [*self.events, *later.events],
            self.attempts + later.attempts,
            self.splits + later.splits,
        )


def same_request(prior: Outcome, command: WalletCommand) -> bool:
    """Whether a command is the request an outcome answered: canonical money fields compared, so a
    fingerprint stored by an earlier version (every default spelled out) still matches a resend."""
    return canonical_fingerprint(prior.fingerprint) == command.fingerprint()


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
        split_after: int = 2,
        grow_after: int = 20,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._max_attempts = max_attempts
        self._backoff_seconds = backoff_seconds
        self._split_after = split_after
        self._grow_after = grow_after
        # The most commands one commit may carry, learnt from splits (None: no limit). It doubles
        # again after `grow_after` commits in a row of that size went through.
        self.commit_limit: int | None = None
        self._fitting = 0

    async def handle_batch(self, commands: Sequence[WalletCommand]) -> BatchReport:
        """Decide and commit; on a conflict with another writer, decide the whole batch again.

        A batch the store runs out of time on (a transaction over the database's time limit), or
        keeps failing on, is split in halves, each handled in order as a batch of its own; later
        batches are cut to the size that went through, which grows back while commits succeed. A
        slow database makes the wallet commit smaller transactions, it does not stop it.
        """
        limit = self.commit_limit
        if limit is None or len(commands) <= limit:
            return await self._handle(commands)
        report = BatchReport(attempts=0)
        for first in range(0, len(commands), limit):
            report = report.then(await self._handle(commands[first : first + limit]))
        return report

    async def _handle(
        self, commands: Sequence[WalletCommand], tried: dict[IdempotencyKey, str] | None = None
    ) -> BatchReport:
        # What earlier attempts tried to commit (key → transaction_id): a commit reported as
        # failed may have gone through all the same (a lost commit answer), and those outcomes
        # are then this delivery's own, not duplicates.
        tried = {} if tried is None else tried
        failures = 0
        for attempt in range(1, self._max_attempts + 1):
            try:
                report = await self._decide_and_commit(commands, tried)
            except (ConcurrencyConflict, TransientStoreError) as error:
                if isinstance(error, TransientStoreError):
                    # Out of time: split at once. Otherwise (a failover) only if it persists.
                    failures += self._split_after if isinstance(error, StoreTimeout) else 1
                    if failures >= self._split_after and len(commands) > 1:
                        return await self._split(commands, error, tried)
                if attempt == self._max_attempts:
                    raise
                delay = self._backoff_seconds * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311
                log.warning("ledger_batch_retry", attempt=attempt, error=str(error), delay=delay)
                await asyncio.sleep(delay)
                continue
            report.attempts = attempt
            self._went_through(len(commands))
            return report
        raise AssertionError("unreachable")  # pragma: no cover

    async def _split(
        self,
        commands: Sequence[WalletCommand],
        error: TransientStoreError,
        tried: dict[IdempotencyKey, str],
    ) -> BatchReport:
        # In order: the first half commits before the second is decided, as one batch would.
        half = len(commands) // 2
        self.commit_limit = min(self.commit_limit or half, half)
        self._fitting = 0
        log.warning("ledger_batch_split", size=len(commands), error=str(error))
        first = await self._handle(commands[:half], tried)
        report = first.then(await self._handle(commands[half:], tried))
        report.splits += 1
        return report

    def _went_through(self, size: int) -> None:
        if self.commit_limit is None or size < self.commit_limit:
            return
        self._fitting += 1
        if self._fitting >= self._grow_after:
            self.commit_limit *= 2
            self._fitting = 0
            log.info("ledger_commit_limit_grows", limit=self.commit_limit)

    async def _decide_and_commit(
        self, commands: Sequence[WalletCommand], tried: dict[IdempotencyKey, str]
    ) -> BatchReport:
        now = self._clock()
        # Each command's key once (a property that builds a tuple), in the batch's order.
        keyed = [(c.idempotency_key, c) for c in commands]
        keys: list[IdempotencyKey] = list(dict.fromkeys(key for key, _ in keyed))
        known = await self._store.find_outcomes(keys) if keys else {}
        fresh = [c for key, c in keyed if key not in known]
        wallets: list[WalletKey] = list(dict.fromkeys(k for c in fresh for k in wallet_keys(c)))
        accounts: list[AccountKey] = list(
            dict.fromkeys(k for c in fresh for k in floored_accounts(c))
        )
        stored = await self._store.read_balances(wallets, accounts)
        now = batch_time(now, stored)
        state = WorkingState(stored, now)
        report = BatchReport()
        decided: dict[IdempotencyKey, Outcome] = {}
        own: set[IdempotencyKey] = set()

        for key, command in keyed:
            prior = known.get(key) or decided.get(key)
            if (
                prior is not None
                and key in known
                and key not in own
                and tried.get(key) == prior.transaction_id
                and same_request(prior, command)
            ):
                # This delivery's own outcome, committed by an attempt reported as failed.
                own.add(key)
                report.results.append(command_result(command, prior.status, now=now, outcome=prior))
                if prior.status == "applied":
                    report.events.append(ledger_event(prior))
                continue
            if prior is not None:
                if same_request(prior, command):
                    report.results.append(
                        command_result(command, "duplicate", now=now, outcome=prior)
                    )
                    if prior.status == "applied" and key in known and key not in own:
                        # A redelivery may follow a crash between the commit and publishing:
                        # publish the event again (wallet.events is at-least-once, by transaction_id).
                        report.events.append(ledger_event(prior))
                else:
                    report.results.append(
                        command_result(
                            command,
                            "rejected",
                            now=now,
                            reason="idempotency_conflict",
                            detail=f"{key} was first used for another request",
                        )
                    )
                continue
            outcome = self._decide_one(key, command, state, now)
            decided[key] = outcome
            report.results.append(command_result(command, outcome.status, now=now, outcome=outcome))
            if outcome.status == "applied":
                report.events.append(ledger_event(outcome))

        if decided:
            outcomes = tuple(decided.values())
            tried.update((o.key, o.transaction_id) for o in outcomes)
            await self._store.commit(
                LedgerBatch(
                    outcomes=outcomes,
                    wallets=state.changed(),
                    history=tuple(row for o in outcomes for row in history_rows(o)),
                    account_deltas=state.account_deltas,
                    account_floors=state.floors,
                )
            )
            # Committed and known as committed: from now on these keys are plain duplicates.
            for outcome in outcomes:
                tried.pop(outcome.key, None)
        # Answered as this delivery's own, in a report that now stands: a later occurrence of the
        # key (in the other half of a split batch) is a duplicate or a conflict, never own again.
        for key in own:
            tried.pop(key, None)
        return report

    def _decide_one(
        self,
        idempotency_key: IdempotencyKey,
        command: WalletCommand,
        state: WorkingState,
        now: datetime,
    ) -> Outcome:
        fingerprint = command.fingerprint()
        transaction_id = self._new_id()
        decision = decide(command, state)
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
        holds = hold_changes(command)
        after = tuple(
            BalanceAfter(key[0], key[1], balances, state.update(key, balances, holds))
            for key, balances in touched.items()
        )
        for key, delta in deltas.items():
            state.move_account(key, delta)
        return Outcome(
            idempotency_key, fingerprint, command, "applied", transaction_id, now, decision, after
        )


def batch_time(clock_now: datetime, stored: StoredBalances) -> datetime:
    """When a batch is recorded: its clock's time, or just after the last change of a wallet it
    touches if that is not earlier (another wallet process's clock ahead or on the same
    millisecond, or this one stepped back). So a wallet's times grow strictly with its versions,
    as `?at=` and newest-first read them; the batch's commit is conditional on the versions it
    read, so no change slips in between. Strictly: a tie would be broken by transaction id, which
    grows only within one process."""
    latest = max((w.last_updated for w in stored.wallets.values()), default=None)
    if latest is None or latest < clock_now:
        return clock_now
    return latest + _MILLISECOND
