"""Replay and verify: the event store is the truth, the projections are derived from it.

`rebuild` folds every recorded outcome into fresh read models; `verify` compares them with the live
ones, checks that every currency sums to zero across all accounts and lists legacy balances not
yet migrated (legacy documents in `wallets`, and copies of replaced ones in
`wallets_legacy_snapshot` whose opening credits have not all applied); `replay` swaps rebuilt
projections in.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal

from shared.money import LEDGER_CONTEXT, format_amount
from wallet.application.ports import LedgerStore
from wallet.domain.accounts import FLOORS, parse_user_account
from wallet.domain.ledger import (
    ZERO,
    AccountKey,
    Balances,
    Holds,
    WalletKey,
    hold_changes,
    is_balanced,
    with_hold,
)
from wallet.domain.migration import not_brought_in
from wallet.domain.projection import history_rows
from wallet.domain.records import (
    HistoryRow,
    IdempotencyKey,
    LegacyDocument,
    LegacyWallet,
    Outcome,
    WalletRecord,
)


@dataclass(frozen=True, slots=True)
class Projections:
    wallets: list[WalletRecord]
    history: list[HistoryRow]
    accounts: dict[tuple[str, str], Decimal]


@dataclass(frozen=True, slots=True)
class AccountDrift:
    """A platform or external account whose stored balance is not what the events explain."""

    account: str
    currency: str
    stored: Decimal
    rebuilt: Decimal

    def __str__(self) -> str:
        return (
            f"account {self.account}/{self.currency}: stored {format_amount(self.stored)},"
            f" rebuilt {format_amount(self.rebuilt)}"
        )


def account_drift(
    rebuilt: Mapping[AccountKey, Decimal], stored: Mapping[AccountKey, Decimal]
) -> list[AccountDrift]:
    """Every account whose stored balance differs from the rebuilt one (a missing one is 0)."""
    drift = []
    for key in sorted(set(rebuilt) | set(stored)):
        want, have = rebuilt.get(key, ZERO), stored.get(key, ZERO)
        if want != have:
            drift.append(AccountDrift(key[0], key[1], have, want))
    return drift


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the live state differs from what the events say."""

    subject: str  # e.g. "wallet user123/BTC", "history 3f2a…:0", "currency BTC"
    field: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.field} expected {self.expected}, found {self.actual}"


def commit_sequences(outcomes: Iterable[Outcome]) -> dict[WalletKey, list[Outcome]]:
    """Per wallet, the applied outcomes that touched it in the order they committed: by the
    version each committed on the wallet, not by a clock (two processes, or a clock stepping back,
    would put them out of order). Outcomes stored before versions were recorded count 1, 2, … in
    the order they were recorded, which is what their stored versions were."""
    applied = sorted(
        (o for o in outcomes if o.status == "applied"),
        key=lambda o: (o.recorded_at, o.transaction_id),
    )
    numbered: dict[WalletKey, list[tuple[int, int, Outcome]]] = {}
    unversioned: dict[WalletKey, int] = {}
    for index, outcome in enumerate(applied):
        for after in outcome.balances_after:
            key = (after.user_id, after.currency)
            version = after.version
            if version is None:
                version = unversioned[key] = unversioned.get(key, 0) + 1
            numbered.setdefault(key, []).append((version, index, outcome))
    return {
        key: [outcome for _, _, outcome in sorted(items, key=lambda item: item[:2])]
        for key, items in numbered.items()
    }


def _fold_wallet(key: WalletKey, sequence: Iterable[Outcome]) -> tuple[Balances, Holds]:
    """A wallet's balances and holds after its transactions, in their commit order."""
    balances: Balances = Balances()
    holds: Holds = ()
    for outcome in sequence:
        for entry in outcome.entries:
            owner = parse_user_account(entry.account)
            if owner is None or (owner[0], entry.currency) != key:
                continue
            balances = balances.moved(owner[1], entry.amount)
            if balances.of(owner[1]) < 0:
                raise ValueError(
                    f"{entry.account} {entry.currency} would go negative"
                    f" at transaction {outcome.transaction_id}"
                )
        for wallet, hold, delta in hold_changes(outcome.command):
            if wallet == key:
                holds = with_hold(holds, hold, delta)
    return balances, holds


def rebuild(outcomes: Iterable[Outcome]) -> Projections:
    """The read models the given outcomes imply, exactly as live projection writes them."""
    outcomes = list(outcomes)
    wallets = []
    for key, sequence in sorted(commit_sequences(outcomes).items()):
        balances, holds = _fold_wallet(key, sequence)
        times = [outcome.recorded_at for outcome in sequence]
        wallets.append(
            WalletRecord(
                user_id=key[0],
                currency=key[1],
                balances=balances,
                version=len(sequence),
                created_at=min(times),
                last_updated=max(times),
                holds=holds,
            )
        )
    applied = [o for o in outcomes if o.status == "applied"]
    accounts: dict[AccountKey, Decimal] = {}
    for outcome in applied:
        for entry in outcome.entries:
            if parse_user_account(entry.account) is None:
                key = (entry.account, entry.currency)
                accounts[key] = LEDGER_CONTEXT.add(accounts.get(key, ZERO), entry.amount)
    history = [row for outcome in applied for row in history_rows(outcome)]
    return Projections(wallets, history, {k: v for k, v in accounts.items() if v != 0})


async def verify(store: LedgerStore) -> list[Difference]:
    """Every difference between the projections and the fold of the events, and every imbalance.

    Every read is of one instant (`reading_at_one_instant`): verify runs beside the wallet, and a
    batch it committed between two of the reads showed as differences on a correct ledger."""
    async with store.reading_at_one_instant() as view:
        return await _verify(view)


async def _verify(store: LedgerStore) -> list[Difference]:
    outcomes = [o async for o in store.all_outcomes()]
    try:
        expected = rebuild(outcomes)
    except ValueError as error:
        # The events themselves cannot be folded (a bucket or hold would go negative).
        return [Difference("events", "fold", "every bucket and hold >= 0", str(error))]
    differences: list[Difference] = []

    for outcome in outcomes:
        if outcome.status == "applied" and not is_balanced(outcome.entries):
            differences.append(
                Difference(
                    f"transaction {outcome.transaction_id}", "postings", "sum 0", "unbalanced"
                )
            )

    applied = {outcome.key for outcome in outcomes if outcome.status == "applied"}
    for legacy in await store.legacy_wallets():
        if not _waiting(legacy, applied):
            continue  # nothing to migrate, or migrate brought it in (see `_waiting`)
        differences.append(
            Difference(
                _wallet_name((legacy.wallet.user_id, legacy.wallet.currency)),
                "shape",
                "a ledger wallet (run wallet migrate)",
                f"a legacy document ({_stored_text(legacy.wallet)})",
            )
        )

    # A legacy document the ledger replaced before `wallet migrate` brought it in is kept in
    # wallets_legacy_snapshot: its balances wait there until migrate's opening credits apply.
    for copy in await store.replaced_legacy_wallets():
        waiting = not_brought_in(copy.document, applied)
        if waiting:
            differences.append(
                Difference(
                    _wallet_name((copy.wallet.user_id, copy.wallet.currency)),
                    "legacy copy",
                    "brought in (run wallet migrate)",
                    f"{', '.join(waiting)} not migrated from wallets_legacy_snapshot"
                    f" ({_stored_text(copy.wallet)})",
                )
            )

    live_wallet_list = [w async for w in store.all_wallets()]
    live_wallets = {w.key: w for w in live_wallet_list}
    for wallet in expected.wallets:
        differences.extend(_compare_wallet(wallet, live_wallets.pop(wallet.key, None)))
    for key in sorted(live_wallets):
        differences.append(Difference(_wallet_name(key), "existence", "absent", "present"))

    live_history = {row.transaction_id: row async for row in store.all_history()}
    for row in expected.history:
        differences.extend(_compare_row(row, live_history.pop(row.transaction_id, None)))
    for transaction_id in sorted(live_history):
        differences.append(
            Difference(f"history {transaction_id}", "existence", "absent", "present")
        )

    live_accounts = {k: v for k, v in (await store.account_balances()).items() if v != 0}
    # What replay would reset, named the same way (see `replay`).
    for drift in account_drift(expected.accounts, live_accounts):
        differences.append(
            Difference(
                f"account {drift.account}/{drift.currency}",
                "balance",
                format_amount(drift.rebuilt),
                format_amount(drift.stored),
            )
        )

    for (account, currency), balance in sorted(live_accounts.items()):
        if account in FLOORS and balance < 0:
            differences.append(
                Difference(f"account {account}/{currency}", "balance", ">= 0", _shown(balance))
            )

    # Conservation is checked on the live read models: what users and ops actually see.
    differences.extend(_conservation(live_wallets_total(live_wallet_list, live_accounts)))
    return differences


def live_wallets_total(
    wallets: Iterable[WalletRecord], accounts: dict[tuple[str, str], Decimal]
) -> dict[str, Decimal]:
    """Per currency, every user bucket plus every platform and external account."""
    totals: dict[str, Decimal] = {}
    for wallet in wallets:
        b = wallet.balances
        held = LEDGER_CONTEXT.add(LEDGER_CONTEXT.add(b.available, b.locked), b.savings)
        totals[wallet.currency] = LEDGER_CONTEXT.add(totals.get(wallet.currency, ZERO), held)
    for (_, currency), balance in accounts.items():
        totals[currency] = LEDGER_CONTEXT.add(totals.get(currency, ZERO), balance)
    return totals


def _conservation(totals: dict[str, Decimal]) -> list[Difference]:
    return [
        Difference(f"currency {currency}", "sum of all accounts", "0", _shown(total))
        for currency, total in sorted(totals.items())
        if total != 0
    ]


class ReplayRefused(Exception):
    """Replay would drop balances that no event stands behind (written some other way)."""

    def __init__(self, wallets: list[str]) -> None:
        super().__init__(
            f"{len(wallets)} wallet(s) have no events behind them and would be dropped: "
            + ", ".join(wallets[:20])
            + (" …" if len(wallets) > 20 else "")
        )
        self.wallets = wallets


@dataclass(frozen=True, slots=True)
class Replay:
    """What a replay swaps in, and every platform or external account whose stored balance it
    resets to what the events explain."""

    projections: Projections
    account_drift: list[AccountDrift]


def _nothing(_: Replay) -> None:
    pass


async def replay(store: LedgerStore, *, before_swap: Callable[[Replay], None] = _nothing) -> Replay:
    """Rebuild the projections from the events and swap them in.

    Refused when a live wallet holds money that no event explains (a legacy document, or a
    balance written around the ledger): replacing the projections would erase it. A legacy
    document without money is dropped like an empty wallet without events. `wallet
    migrate` turns such balances into events first.

    A platform or external account is derived from the events only, so one whose stored balance
    no event explains is reset to what they do: `before_swap` is handed every such account (with
    its stored and rebuilt balance) before anything is replaced, so that it is never lost
    silently.
    """
    outcomes = [o async for o in store.all_outcomes()]
    projections = rebuild(outcomes)
    rebuilt = {wallet.key for wallet in projections.wallets}
    orphans = [
        _wallet_name(wallet.key)
        async for wallet in store.all_wallets()
        if wallet.key not in rebuilt and _holds_money(wallet.balances)
    ]
    applied = {outcome.key for outcome in outcomes if outcome.status == "applied"}
    orphans += [
        f"{_wallet_name((legacy.wallet.user_id, legacy.wallet.currency))} (legacy document)"
        for legacy in await store.legacy_wallets()
        if _waiting(legacy, applied)
    ]
    if orphans:
        raise ReplayRefused(orphans)
    planned = Replay(
        projections, account_drift(projections.accounts, await store.account_balances())
    )
    before_swap(planned)
    await store.replace_projections(projections.wallets, projections.history, projections.accounts)
    return planned


def _holds_money(balances: Balances) -> bool:
    return any((balances.available, balances.locked, balances.savings))


def _stored_text(legacy: LegacyWallet) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(legacy.fields.items())) or "no balances"


def _wallet_name(key: WalletKey) -> str:
    return f"wallet {key[0]}/{key[1]}"


def _compare_wallet(expected: WalletRecord, actual: WalletRecord | None) -> list[Difference]:
    name = _wallet_name(expected.key)
    if actual is None:
        return [Difference(name, "existence", "present", "absent")]
    pairs = [
        ("available_balance", expected.balances.available, actual.balances.available),
        ("locked_balance", expected.balances.locked, actual.balances.locked),
        ("savings_balance", expected.balances.savings, actual.balances.savings),
        ("total_balance", expected.balances.total, _total_of(actual)),
        ("version", expected.version, actual.version),
        ("holds", _holds_text(expected.holds), _holds_text(actual.holds)),
    ]
    return [
        Difference(name, f, _shown(want), _shown(have)) for f, want, have in pairs if want != have
    ]


def _shown(value: object) -> str:
    """A value as ops read it: an amount as a plain decimal (`0.75`, not `0.75000000` as a store
    may keep it, nor `1E-7`), anything else as its text."""
    return format_amount(value) if isinstance(value, Decimal) else str(value)


def _total_of(wallet: WalletRecord) -> Decimal:
    return wallet.balances.total if wallet.stored_total is None else wallet.stored_total


def _holds_text(holds: Holds) -> str:
    return (
        ", ".join(f"{reference}={format_amount(amount)}" for reference, amount in holds) or "none"
    )


def _compare_row(expected: HistoryRow, actual: HistoryRow | None) -> list[Difference]:
    name = f"history {expected.transaction_id}"
    if actual is None:
        return [Difference(name, "existence", "present", "absent")]
    return [
        Difference(name, f.name, _shown(getattr(expected, f.name)), _shown(getattr(actual, f.name)))
        for f in fields(HistoryRow)
        if getattr(expected, f.name) != getattr(actual, f.name)
    ]


def _waiting(legacy: LegacyDocument, applied: Container[IdempotencyKey]) -> bool:
    """Whether a legacy document still in `wallets` holds money no event explains. One migrate
    brought in (every bucket's opening credit applied) stays there when the ledger writes its
    wallet under another key (`btc` as `BTC`, a number user id as text), and one whose amounts
    round to nothing at the currency's scale gets no credit at all: neither is waiting. Migrating
    in place keeps a copy in `wallets_legacy_snapshot`; one never migrated whose amounts round to
    nothing is dropped by replay like an empty one."""
    return legacy.wallet.holds_money and bool(not_brought_in(legacy.document, applied))
