"""Ledger rules: each command decides to one balanced set of entries, or to a rejection.

`decide` is pure: it reads balances through a function and returns what should happen; nothing is
changed until the caller applies the entries with `apply_entries`. Per currency the entries of one
decision always sum to zero, so the whole ledger does too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from shared.messaging import (
    CreditCommand,
    DebitCommand,
    ExchangeCommand,
    LockCommand,
    ReleaseLockedCommand,
    SavingsInCommand,
    SavingsOutCommand,
    TransferCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
)

# Arithmetic goes through LEDGER_CONTEXT: Python's default context rounds at 28 digits, and an
# 18-decimal ETH amount can have more.
from shared.money import LEDGER_CONTEXT, negate, subtract
from wallet.domain.accounts import (
    PLATFORM_FEES,
    PLATFORM_LIQUIDITY,
    Bucket,
    external_account,
    parse_user_account,
    user_account,
)

ZERO: Final = Decimal(0)

WalletKey = tuple[str, str]  # (user_id, currency)


@dataclass(frozen=True, slots=True)
class Balances:
    """One user's balances of one currency. total = available + locked, as in the seed."""

    available: Decimal = ZERO
    locked: Decimal = ZERO
    savings: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return LEDGER_CONTEXT.add(self.available, self.locked)

    def of(self, bucket: Bucket) -> Decimal:
        return getattr(self, bucket)  # type: ignore[no-any-return]

    def moved(self, bucket: Bucket, delta: Decimal) -> Balances:
        value = LEDGER_CONTEXT.add(self.of(bucket), delta)
        if bucket == "available":
            return Balances(value, self.locked, self.savings)
        if bucket == "locked":
            return Balances(self.available, value, self.savings)
        return Balances(self.available, self.locked, value)


@dataclass(frozen=True, slots=True)
class Entry:
    """`amount` (signed) moves into `account` in `currency`."""

    account: str
    currency: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


Decision = tuple[Entry, ...] | Rejection
BalanceLookup = Callable[[WalletKey], Balances]
# How much of a wallet's locked balance is held under a reference (a trade, a withdrawal).
HoldLookup = Callable[[WalletKey, str], Decimal]
Holds = tuple[tuple[str, Decimal], ...]  # (reference_id, amount), sorted, no zero amounts


def counterparty_of(transaction_type: str) -> str:
    """External account money comes from or goes to: `deposit_nowpayments` → external:nowpayments."""
    return external_account(transaction_type.removeprefix("deposit_"))


def _move(source: str, target: str, currency: str, amount: Decimal) -> tuple[Entry, Entry]:
    return Entry(source, currency, negate(amount)), Entry(target, currency, amount)


def _split_fee(
    source: str, target: str, currency: str, amount: Decimal, fee: Decimal
) -> tuple[Entry, ...]:
    """`amount` leaves source; `fee` of it goes to platform:fees and the rest to target."""
    entries = [
        Entry(source, currency, negate(amount)),
        Entry(target, currency, subtract(amount, fee)),
    ]
    if fee:
        entries.append(Entry(PLATFORM_FEES, currency, fee))
    return tuple(entries)


def _short(bucket: Bucket, user_id: str, currency: str, need: Decimal, have: Decimal) -> Rejection:
    return Rejection(
        "insufficient_funds",
        f"{bucket} {currency} of {user_id} is {have}, {need} needed",
    )


def decide(command: WalletCommand, balance_of: BalanceLookup, hold_of: HoldLookup) -> Decision:
    """The entries a command produces against current balances, or why it cannot be applied.

    Locked money is held per reference: an unlock, a release or a locked transfer spends only
    what a lock under the same reference_id put there, never another trade's escrow.
    """
    user, currency, amount = command.user_id, command.currency, command.amount
    key = (user, currency)

    def require(bucket: Bucket, need: Decimal) -> Rejection | None:
        have = balance_of(key).of(bucket)
        if have < need:
            return _short(bucket, user, currency, need, have)
        if bucket == "locked":
            held = hold_of(key, command.reference_id)
            if held < need:
                return Rejection(
                    "insufficient_funds",
                    f"locked {currency} of {user} under {command.reference_id} is {held},"
                    f" {need} needed",
                )
        return None

    match command:
        case CreditCommand():
            return _move(
                counterparty_of(command.transaction_type),
                user_account(user, "available"),
                currency,
                amount,
            )
        case DebitCommand():
            return require("available", amount) or _move(
                user_account(user, "available"),
                counterparty_of(command.transaction_type),
                currency,
                amount,
            )
        case LockCommand():
            return require("available", amount) or _move(
                user_account(user, "available"), user_account(user, "locked"), currency, amount
            )
        case UnlockCommand():
            return require("locked", amount) or _move(
                user_account(user, "locked"), user_account(user, "available"), currency, amount
            )
        case ReleaseLockedCommand():
            return require("locked", amount) or _split_fee(
                user_account(user, "locked"),
                external_account(command.destination),
                currency,
                amount,
                command.fee_amount,
            )
        case TransferCommand():
            if command.to_user == user:
                return Rejection("same_account", "a transfer needs two different users")
            return require("available", amount) or _move(
                user_account(user, "available"),
                user_account(command.to_user, "available"),
                currency,
                amount,
            )
        case TransferLockedCommand():
            if command.to_user == user:
                return Rejection("same_account", "a transfer needs two different users")
            return require("locked", amount) or _split_fee(
                user_account(user, "locked"),
                user_account(command.to_user, "available"),
                currency,
                amount,
                command.fee_amount,
            )
        case ExchangeCommand():
            return require("available", amount) or (
                *_split_fee(
                    user_account(user, "available"),
                    PLATFORM_LIQUIDITY,
                    currency,
                    amount,
                    command.fee_amount,
                ),
                *_move(
                    PLATFORM_LIQUIDITY,
                    user_account(user, "available"),
                    command.receive_currency,
                    command.receive_amount,
                ),
            )
        case SavingsInCommand():
            return require("available", amount) or _move(
                user_account(user, "available"), user_account(user, "savings"), currency, amount
            )
        case SavingsOutCommand():
            return require("savings", amount) or _move(
                user_account(user, "savings"), user_account(user, "available"), currency, amount
            )
    raise AssertionError(f"unhandled command type {command.type}")  # pragma: no cover


def hold_change(command: WalletCommand) -> tuple[WalletKey, str, Decimal] | None:
    """How an applied command changes the payer's holds: a lock adds to the hold under its
    reference; unlock, release and locked transfer take from it."""
    key = (command.user_id, command.currency)
    if isinstance(command, LockCommand):
        return key, command.reference_id, command.amount
    if isinstance(command, UnlockCommand | ReleaseLockedCommand | TransferLockedCommand):
        return key, command.reference_id, negate(command.amount)
    return None


def with_hold(holds: Holds, reference_id: str, delta: Decimal) -> Holds:
    """`holds` with `delta` added under `reference_id`; a hold that reaches zero is gone."""
    current = dict(holds)
    amount = LEDGER_CONTEXT.add(current.get(reference_id, ZERO), delta)
    if amount < 0:
        raise ValueError(f"hold {reference_id} would go negative")
    if amount:
        current[reference_id] = amount
    else:
        current.pop(reference_id, None)
    return tuple(sorted(current.items()))


def wallet_keys(command: WalletCommand) -> tuple[WalletKey, ...]:
    """The user wallets a command may touch: loaded before deciding, in one query per batch."""
    keys: list[WalletKey] = [(command.user_id, command.currency)]
    if isinstance(command, TransferCommand | TransferLockedCommand):
        keys.append((command.to_user, command.currency))
    if isinstance(command, ExchangeCommand):
        keys.append((command.user_id, command.receive_currency))
    return tuple(keys)


def apply_entries(
    balance_of: BalanceLookup, entries: Iterable[Entry]
) -> tuple[dict[WalletKey, Balances], dict[tuple[str, str], Decimal]]:
    """New balances of the user wallets the entries touch, and the deltas of every other account.

    Raises ValueError if a user bucket would go negative: `decide` checks first, so this guards
    against a bug, never against a user.
    """
    wallets: dict[WalletKey, Balances] = {}
    others: dict[tuple[str, str], Decimal] = {}
    for entry in entries:
        owner = parse_user_account(entry.account)
        if owner is None:
            key = (entry.account, entry.currency)
            others[key] = LEDGER_CONTEXT.add(others.get(key, ZERO), entry.amount)
            continue
        user_id, bucket = owner
        wallet_key = (user_id, entry.currency)
        current = wallets.get(wallet_key) or balance_of(wallet_key)
        updated = current.moved(bucket, entry.amount)
        if updated.of(bucket) < 0:
            raise ValueError(f"{entry.account} {entry.currency} would go negative")
        wallets[wallet_key] = updated
    return wallets, others


def is_balanced(entries: Iterable[Entry]) -> bool:
    """Per currency, the entries sum to zero."""
    totals: dict[str, Decimal] = {}
    for entry in entries:
        totals[entry.currency] = LEDGER_CONTEXT.add(totals.get(entry.currency, ZERO), entry.amount)
    return all(total == 0 for total in totals.values())


def fold(
    transactions: Iterable[Iterable[Entry]],
) -> tuple[Mapping[WalletKey, Balances], Mapping[tuple[str, str], Decimal]]:
    """Balances after applying every transaction in order: what the projections must equal."""
    wallets: dict[WalletKey, Balances] = {}
    others: dict[tuple[str, str], Decimal] = {}

    def balance_of(key: WalletKey) -> Balances:
        return wallets.get(key, Balances())

    for entries in transactions:
        touched, deltas = apply_entries(balance_of, entries)
        wallets.update(touched)
        for key, delta in deltas.items():
            others[key] = LEDGER_CONTEXT.add(others.get(key, ZERO), delta)
    return wallets, others
