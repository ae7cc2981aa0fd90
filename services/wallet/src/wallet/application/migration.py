"""`wallet migrate`: legacy balances in, as opening transactions through the running wallet.

The migration is a producer like any other: it never writes balances itself. It reads the legacy
collections, plans one opening credit per (collection, document, bucket), sends them to
`wallet.commands`, waits for every result, then reads the migrated users' wallets back and compares
them with what the legacy rows add up to. Before it sends anything, the source keeps a copy of every
legacy document the ledger would replace (the `wallets` collection migrated in place), so that a run
stopped part-way and run again still plans, sends and compares every bucket of it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from shared.messaging import unsendable_reason
from shared.money import add, format_amount, subtract
from wallet.application.ports import LedgerStore
from wallet.domain.accounts import external_account
from wallet.domain.migration import (
    MIGRATION_BUCKETS,
    BucketTotals,
    CollectionMapping,
    MigrationBucket,
    Mismatch,
    OpeningLine,
    Plan,
    exact_text,
    mismatches,
    read_document,
    totals_by_currency,
)

LEGACY_ACCOUNT = external_account("legacy_migration")


class LegacySource(Protocol):
    """The legacy database."""

    def documents(self, collection: str) -> AsyncIterator[Mapping[str, Any]]:
        """Every legacy document of the collection, those the ledger has replaced since they were
        preserved included."""
        ...

    async def preserve(self, collections: Sequence[str]) -> None:
        """Keep what the ledger's writes would replace of these collections (a no-op for one it
        never writes), so that `documents` still returns it after an opening credit applied."""
        ...


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the wallet answered for one opening line."""

    line: OpeningLine
    status: str  # applied | duplicate | rejected | timeout | error
    original_status: str | None = None
    reason: str | None = None

    @property
    def took_effect(self) -> bool:
        return self.status == "applied" or (
            self.status == "duplicate" and self.original_status == "applied"
        )


class OpeningSender(Protocol):
    async def send(self, lines: Sequence[OpeningLine]) -> list[SendOutcome]:
        """Send every line to the wallet and wait for each one's result."""
        ...


@dataclass(slots=True)
class MigrationReport:
    plan: Plan
    dry_run: bool
    skip_invalid: bool
    blocked: bool = False
    outcomes: list[SendOutcome] = field(default_factory=list)
    post_balances: dict[tuple[str, str], BucketTotals] | None = None
    mismatched: list[Mismatch] = field(default_factory=list)
    # Per currency, what the ledger opened from external:legacy_migration in all runs: a credit
    # of a row this run does not plan (since deleted, made invalid or unmapped) shows only here.
    # Not part of `match` (the migrated users' wallets, as the contract has it): a ledger that
    # also holds another source's opening credits differs here by design. Listed, for ops.
    opened: dict[str, Decimal] | None = None

    @property
    def differences(self) -> list[str]:
        return [str(mismatch) for mismatch in self.mismatched]

    @property
    def opening_differences(self) -> list[str]:
        if self.opened is None:
            return []
        planned = {
            currency: functools.reduce(add, buckets.values(), Decimal(0))
            for currency, buckets in self.plan.totals().items()
        }
        return [
            f"{currency}: the ledger opened {format_amount(opened)} from {LEGACY_ACCOUNT} in all,"
            f" the legacy rows add up to {format_amount(legacy)}"
            for currency in sorted(set(planned) | set(self.opened))
            if (opened := self.opened.get(currency, Decimal(0)))
            != (legacy := planned.get(currency, Decimal(0)))
        ]

    @property
    def failed(self) -> list[SendOutcome]:
        return [o for o in self.outcomes if not o.took_effect]

    @property
    def match(self) -> bool | None:
        """Every migrated wallet (so every currency's total) equals the legacy sums after the
        listed rounding, and every opening transaction took effect. In `tables` a currency line
        says `matches` only when its total and each of its wallets do, every difference and every
        transaction that did not take effect is listed, and `match: NO (…)` counts both."""
        if self.post_balances is None:
            return None
        return not self.mismatched and not self.failed

    @property
    def exit_code(self) -> int:
        if self.blocked or self.failed:
            return 1
        return 0 if self.match in (None, True) else 1

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        report: dict[str, Any] = {
            "pre": {
                "collections": {name: {"records": n} for name, n in sorted(plan.records.items())},
                "users": len(plan.users),
                "totals": _totals_json(plan.totals()),
            },
            "post": None,
            "match": self.match,
            "invalid": [
                {
                    "collection": row.collection,
                    "_id": row.document_id,
                    "user_id": row.user_id,
                    "currency": row.currency,
                    "field": row.field,
                    "original": row.original,
                    "reason": row.reason,
                }
                for row in plan.invalid
            ],
            "rounded": [
                {
                    "collection": row.collection,
                    "_id": row.document_id,
                    "user_id": row.user_id,
                    "currency": row.currency,
                    "field": row.field,
                    "original": row.original,
                    "migrated": format_amount(row.migrated),
                    "difference": exact_text(row.difference),
                }
                for row in plan.rounded
            ],
            # Extensions: how the run went.
            "dry_run": self.dry_run,
            "blocked": self.blocked,
            "skipped_invalid": self.skip_invalid and bool(plan.invalid),
            "transactions": {
                "planned": len(plan.lines),
                "applied": sum(1 for o in self.outcomes if o.status == "applied"),
                "already_applied": sum(
                    1 for o in self.outcomes if o.status == "duplicate" and o.took_effect
                ),
                "failed": [
                    {
                        "reference_id": o.line.reference_id,
                        "transaction_type": o.line.transaction_type,
                        "user_id": o.line.user_id,
                        "currency": o.line.currency,
                        "status": o.status,
                        "reason": o.reason,
                    }
                    for o in self.failed
                ],
            },
            "differences": self.differences,
            "opened_in_all": None
            if self.opened is None
            else {
                "totals": {c: format_amount(a) for c, a in sorted(self.opened.items())},
                "differences": self.opening_differences,
            },
        }
        if self.post_balances is not None:
            users = {
                user for (user, _), totals in self.post_balances.items() if any(totals.values())
            }
            report["post"] = {
                "users": len(users),
                "totals": _totals_json(totals_by_currency(self.post_balances)),
            }
        return report

    def tables(self) -> str:
        """The report as the seed's "Data integrity checks" tables."""
        plan = self.plan
        pre_totals = plan.totals()
        lines = ["Pre-Migration Snapshot", f"Total Users: {len(plan.users)}"]
        lines += [f"Total {c}: {_bucket_text(t)}" for c, t in sorted(pre_totals.items())]
        lines.append("Collections:")
        lines += [f"  - {name}: {n} records" for name, n in sorted(plan.records.items())]
        if plan.invalid:
            verb = "skipped" if self.skip_invalid else "blocking"
            lines.append(f"Invalid rows ({verb}): {len(plan.invalid)}")
            lines += [
                f"  - {r.collection} {r.document_id} {r.field}: {r.reason} ({r.original})"
                for r in plan.invalid
            ]
        if plan.rounded:
            lines.append(f"Rounded to the currency's scale: {len(plan.rounded)}")
            lines += [
                f"  - {r.collection} {r.document_id} {r.field}: {r.original} -> "
                f"{format_amount(r.migrated)} ({exact_text(r.difference)})"
                for r in plan.rounded
            ]
        lines.append("")
        if self.blocked:
            lines.append("Migration blocked by invalid rows: nothing was written")
            return "\n".join(lines)
        if self.post_balances is None:
            lines.append(f"Dry run: {len(plan.lines)} opening transactions would be sent")
            return "\n".join(lines)
        post_totals = totals_by_currency(self.post_balances)
        users = {u for (u, _), t in self.post_balances.items() if any(t.values())}
        lines.append("Post-Migration Verification")
        lines.append(f"Total Users: {len(users)} ({_verdict(len(users) == len(plan.users))})")
        for currency in sorted(set(pre_totals) | set(post_totals)):
            post = post_totals.get(currency, {})
            verdict = self._currency_verdict(currency, pre_totals.get(currency, {}), post)
            lines.append(f"Total {currency}: {_bucket_text(post)} ({verdict})")
        lines.append("Collection:")
        lines.append(
            f"  - wallets: {len(self.post_balances)} records"
            f" ({sum(plan.records.values())} legacy records)"
        )
        lines.append(
            f"Transactions: {len(plan.lines)} planned, "
            f"{sum(1 for o in self.outcomes if o.status == 'applied')} applied now, "
            f"{len(self.failed)} failed"
        )
        lines += [f"  ! {difference}" for difference in self.differences]
        lines += [f"  ! not applied: {_failure_text(outcome)}" for outcome in self.failed]
        if self.opening_differences:
            # Opening credits of rows this run did not plan: deleted, now invalid or unmapped
            # since an earlier run, or another source's.
            lines.append(f"Opened from {LEGACY_ACCOUNT} in all runs, against these rows:")
            lines += [f"  ! {difference}" for difference in self.opening_differences]
        lines.append(f"match: {'yes' if self.match else f'NO ({self._why_not()})'}")
        return "\n".join(lines)

    def _currency_verdict(
        self,
        currency: str,
        pre: Mapping[MigrationBucket, Decimal],
        post: Mapping[MigrationBucket, Decimal],
    ) -> str:
        """`matches` when the currency's total and every migrated wallet of it equal the legacy
        sums; otherwise by how much the total differs and how many wallets differ."""
        reasons = []
        for bucket in MIGRATION_BUCKETS:
            delta = subtract(post.get(bucket, Decimal(0)), pre.get(bucket, Decimal(0)))
            if delta:
                reasons.append(f"{bucket} {'+' if delta > 0 else ''}{format_amount(delta)}")
        wallets = len({m.user_id for m in self.mismatched if m.currency == currency})
        if not reasons and not wallets:
            return _verdict(True)
        if not reasons:
            reasons.append("the total matches")
        if wallets:
            reasons.append(f"{wallets} wallet{' differs' if wallets == 1 else 's differ'}")
        return f"{_verdict(False)}: {', '.join(reasons)}"

    def _why_not(self) -> str:
        reasons = []
        if self.mismatched:
            n = len(self.mismatched)
            reasons.append(f"{n} difference{'' if n == 1 else 's'}")
        if self.failed:
            n = len(self.failed)
            reasons.append(f"{n} opening transaction{'' if n == 1 else 's'} not applied")
        return "; ".join(reasons)


def _failure_text(outcome: SendOutcome) -> str:
    line = outcome.line
    status = outcome.status
    if status == "duplicate":
        status = f"first {outcome.original_status or 'answered'}"
    return (
        f"{line.user_id} {line.currency} {line.bucket} {format_amount(line.amount)}"
        f" ({line.reference_id}, {line.transaction_type}): {status}"
        + (f", {outcome.reason}" if outcome.reason else "")
    )


def _verdict(same: bool) -> str:
    return "matches" if same else "DIFFERS"


def _bucket_text(totals: Mapping[MigrationBucket, Decimal]) -> str:
    return ", ".join(f"{b} {format_amount(totals.get(b, Decimal(0)))}" for b in MIGRATION_BUCKETS)


def _totals_json(totals: Mapping[str, Mapping[MigrationBucket, Decimal]]) -> dict[str, Any]:
    return {
        currency: {b: format_amount(buckets.get(b, Decimal(0))) for b in MIGRATION_BUCKETS}
        for currency, buckets in sorted(totals.items())
    }


async def plan_migration(mappings: Sequence[CollectionMapping], source: LegacySource) -> Plan:
    plan = Plan()
    for mapping in mappings:
        plan.records.setdefault(mapping.name, 0)
        async for document in source.documents(mapping.name):
            plan.add(mapping.name, read_document(mapping, document))
    return plan


async def ledger_balances(
    store: LedgerStore, users: Sequence[str]
) -> dict[tuple[str, str], BucketTotals]:
    """The migrated users' balances as the ledger's projection shows them."""
    balances: dict[tuple[str, str], BucketTotals] = {}
    for user_id in users:
        for wallet in await store.wallets_of(user_id):
            b = wallet.balances
            balances[(user_id, wallet.currency)] = {
                "available": b.available,
                "locked": b.locked,
                "savings": b.savings,
            }
    return balances


async def migrate(
    mappings: Sequence[CollectionMapping],
    source: LegacySource,
    store: LedgerStore,
    sender: OpeningSender | None,
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
) -> MigrationReport:
    """Plan, send (unless dry_run or blocked), then verify against the ledger."""
    plan = await plan_migration(mappings, source)
    if not dry_run and (skip_invalid or not plan.invalid):
        if sender is None:
            raise ValueError("a migration that is not a dry run needs a sender")
        # Keep the documents the first credits will replace, then send exactly what was kept.
        await source.preserve([m.name for m in mappings])
        plan = await plan_migration(mappings, source)
    report = MigrationReport(plan, dry_run=dry_run, skip_invalid=skip_invalid)
    if plan.invalid and not skip_invalid:
        report.blocked = True
        return report
    if dry_run:
        return report
    assert sender is not None
    report.outcomes = await sender.send(plan.lines)
    report.post_balances = await ledger_balances(store, sorted(plan.users))
    report.mismatched = mismatches(plan.expected(), report.post_balances)
    report.opened = {
        currency: -balance
        for (account, currency), balance in (await store.account_balances()).items()
        if account == LEGACY_ACCOUNT and balance
    }
    return report


class WalletCommandSender:
    """Sends opening lines through a `WalletClient`, many in flight, and collects each result."""

    def __init__(self, wallet: Any, *, in_flight: int = 100, result_timeout: float = 60.0) -> None:
        self._wallet = (
            wallet  # shared.wallet_client.WalletClient (kept loose: no Kafka import here)
        )
        self._in_flight = in_flight
        self._result_timeout = result_timeout

    async def send(self, lines: Sequence[OpeningLine]) -> list[SendOutcome]:
        # `in_flight` senders take the lines in turn: memory stays that of the plan, whatever
        # its size (a task per line would cost about 1.5 KB each before the first was sent).
        outcomes: list[SendOutcome | None] = [None] * len(lines)
        pending = iter(enumerate(lines))

        async def sender() -> None:
            for index, line in pending:
                outcomes[index] = await self._send_one(line)

        await asyncio.gather(*(sender() for _ in range(min(self._in_flight, len(lines)))))
        return [outcome for outcome in outcomes if outcome is not None]

    async def _send_one(self, line: OpeningLine) -> SendOutcome:
        try:
            result = await self._wallet.credit(
                user_id=line.user_id,
                currency=line.currency,
                amount=line.amount,
                transaction_type=line.transaction_type,
                reference_id=line.reference_id,
                metadata={
                    "collection": line.collection,
                    "document_id": line.document_id,
                    "bucket": line.bucket,
                },
                result_timeout=self._result_timeout,
            )
        except TimeoutError:
            return SendOutcome(line, "timeout", reason="no result in time; run migrate again")
        except ValueError as error:
            # A line the command refuses (planning should have listed it as invalid): one
            # line, not the whole run, and the report is still written.
            return SendOutcome(line, "rejected", reason=f"unsendable: {unsendable_reason(error)}")
        except Exception as error:
            # The broker away, say: this line is not applied, the others go on, the report is
            # written and says so (exit 1), and running migrate again sends what is missing.
            return SendOutcome(
                line, "error", reason=f"{type(error).__name__}: {str(error)[:300]}; run again"
            )
        return SendOutcome(line, result.status, result.original_status, result.reason)
