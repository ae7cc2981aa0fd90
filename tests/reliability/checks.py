"""The invariants every reliability test checks, over any ledger store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from shared.messaging import CommandResult, LedgerTransaction
from tests.reliability.model import ExactlyOnceModel, Key
from wallet.application.ports import LedgerStore
from wallet.application.reconciliation import verify


async def check_ledger(store: LedgerStore, model: ExactlyOnceModel | None = None) -> None:
    """Conservation, no negative bucket, projections = fold of the events, and (given a model)
    exactly the balances an exactly-once wallet would hold."""
    outcomes = [o async for o in store.all_outcomes()]
    postings: dict[str, Decimal] = defaultdict(Decimal)
    for outcome in outcomes:
        for entry in outcome.entries:
            postings[entry.currency] += entry.amount
    unbalanced = {c: s for c, s in postings.items() if s != 0}
    assert not unbalanced, f"postings do not sum to zero: {unbalanced}"

    wallets = [w async for w in store.all_wallets()]
    for w in wallets:
        b = w.balances
        assert min(b.available, b.locked, b.savings) >= 0, f"negative bucket: {w}"
        assert b.total == b.available + b.locked, w
        # Holds split the locked balance: none negative (or empty), together exactly all of it.
        assert all(amount > 0 for _, amount in w.holds), f"empty or negative hold: {w}"
        assert sum((amount for _, amount in w.holds), Decimal(0)) == b.locked, w

    for (account, currency), balance in (await store.account_balances()).items():
        if account in ("platform:liquidity", "platform:fees"):
            assert balance >= 0, f"{account} {currency} went below zero: {balance}"

    differences = await verify(store)
    assert not differences, "verify: " + "; ".join(map(str, differences))

    if model is not None:
        live = {
            w.key: (w.balances.available, w.balances.locked, w.balances.savings)
            for w in wallets
            if any((w.balances.available, w.balances.locked, w.balances.savings))
        }
        assert live == model.nonzero_wallets(), "wallets differ from the exactly-once model"
        accounts = {k: v for k, v in (await store.account_balances()).items() if v != 0}
        assert accounts == model.nonzero_accounts(), "accounts differ from the exactly-once model"
        applied = {o.key for o in outcomes if o.status == "applied"}
        assert applied == {k for k, (_, s) in model.decided.items() if s == "applied"}


def check_applied_once(
    results: Iterable[tuple[Key, CommandResult]], events: Iterable[LedgerTransaction]
) -> None:
    """Each idempotency key has at most one applied answer and one ledger transaction, and every
    answer to it agrees on its effective status (a duplicate's original_status)."""
    applied: dict[Key, int] = defaultdict(int)
    effective: dict[Key, set[str]] = defaultdict(set)
    transaction: dict[Key, set[str]] = defaultdict(set)
    for key, result in results:
        if result.reason == "idempotency_conflict":
            continue  # an answer to another request that reused the key, not to this one
        applied[key] += result.status == "applied"
        effective[key].add(result.original_status or result.status)
        if result.transaction_id is not None:
            transaction[key].add(result.transaction_id)
    for event in events:
        transaction[(event.type, event.transaction_type, event.reference_id)].add(
            event.transaction_id
        )
    assert all(n <= 1 for n in applied.values()), {k: n for k, n in applied.items() if n > 1}
    assert all(len(s) == 1 for s in effective.values()), {
        k: s for k, s in effective.items() if len(s) > 1
    }
    assert all(len(s) <= 1 for s in transaction.values()), {
        k: s for k, s in transaction.items() if len(s) > 1
    }
