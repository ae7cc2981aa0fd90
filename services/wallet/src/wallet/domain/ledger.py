"""Ledger rules: each command decides to one balanced set of entries, or to a rejection.

`decide` is pure: it reads balances through a `LedgerView` and returns what should happen; nothing
is changed until the caller applies the entries with `apply_entries`. Per currency the entries of
one decision always sum to zero, so the whole ledger does too. Which transaction types exist, and
where their money comes from, is the registry's (`wallet.domain.registry`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Protocol

from shared.messaging import (
    CreditCommand,
    DebitCommand,
    ExchangeCommand,
    LockCommand,
    ReleaseLockedCommand,
    SavingsInCommand,
    SavingsOutCommand,
    SettleTradeCommand,
    TransferCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
)

# Arithmetic goes through LEDGER_CONTEXT: Python's default context rounds at 28 digits, and an
# 18-decimal ETH amount can have more.
from shared.money import LEDGER_CONTEXT, format_amount, negate, subtract
from wallet.domain.accounts import (
    FLOORS,
    PLATFORM_FEES,
    PLATFORM_LIQUIDITY,
    Bucket,
    external_account,
    parse_user_account,
    user_account,
)
from wallet.domain.registry import TransactionTypeSpec, registered

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
AccountKey = tuple[str, str]  # (account, currency) of a platform or external account
Holds = tuple[tuple[str, Decimal], ...]  # (hold id, amount), sorted, no zero amounts
HoldChange = tuple[WalletKey, str, Decimal]  # (wallet, hold id, signed amount)


class LedgerView(Protocol):
    """What a decision reads: the balances as they stand before the command."""

    def balance_of(self, key: WalletKey) -> Balances:
        """A user's balances of one currency (zeros if the wallet does not exist)."""
        ...

    def hold_of(self, key: WalletKey, hold: str) -> Decimal:
        """How much of a wallet's locked balance is held under `hold` (an order, a trade)."""
        ...

    def account_of(self, key: AccountKey) -> Decimal:
        """The balance of a platform account; only the floored ones (FLOORS) are asked for."""
        ...


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


def _unregistered(command: WalletCommand, why: str = "") -> Rejection:
    return Rejection(
        "unknown_transaction_type",
        f"transaction_type {command.transaction_type!r} is not registered for {command.type}" + why,
    )


def _require(
    view: LedgerView, key: WalletKey, bucket: Bucket, need: Decimal, hold: str | None = None
) -> Rejection | None:
    """None if the wallet has `need` in `bucket` (and, for locked money, under `hold`)."""
    user, currency = key
    have = view.balance_of(key).of(bucket)
    if have < need:
        return _short(bucket, user, currency, need, have)
    if bucket == "locked" and hold is not None:
        held = view.hold_of(key, hold)
        if held < need:
            return Rejection(
                "insufficient_funds",
                f"locked {currency} of {user} under {hold} is {held}, {need} needed",
            )
    return None


def _floors(entries: tuple[Entry, ...], view: LedgerView) -> Rejection | None:
    """A rejection if the entries take a floored platform account below zero."""
    net: dict[AccountKey, Decimal] = {}
    for entry in entries:
        if entry.account in FLOORS:
            key = (entry.account, entry.currency)
            net[key] = LEDGER_CONTEXT.add(net.get(key, ZERO), entry.amount)
    for (account, currency), delta in net.items():
        have = view.account_of((account, currency))
        if delta < 0 and LEDGER_CONTEXT.add(have, delta) < 0:
            return Rejection(
                FLOORS[account],
                f"{account} {currency} is {format_amount(have)},"
                f" {format_amount(negate(delta))} needed",
            )
    return None


def decide(command: WalletCommand, view: LedgerView) -> Decision:
    """The entries a command produces against current balances, or why it cannot be applied.

    Its transaction type must be registered for its command type. Locked money is held per hold
    (`command.hold`: the hold id, or the reference_id without one): an unlock, a release or a
    locked transfer spends only what a lock under the same hold put there, never another trade's
    escrow. A floored platform account (platform:liquidity, platform:fees) never goes below zero.
    """
    spec = registered(command.transaction_type, command.type)
    if spec is None:
        return _unregistered(command)
    decision = _entries(command, spec, view)
    if isinstance(decision, Rejection):
        return decision
    return _floors(decision, view) or decision


def _entries(command: WalletCommand, spec: TransactionTypeSpec, view: LedgerView) -> Decision:
    user, currency, amount = command.user_id, command.currency, command.amount
    key = (user, currency)

    def account(bucket: Bucket) -> str:
        return user_account(user, bucket)

    match command:
        case CreditCommand():
            assert spec.counterparty is not None, spec  # every credit type names its source
            target = (
                account(spec.credit_bucket)
                if spec.credit_bucket is not None
                else spec.credit_account
            )
            assert target is not None, spec
            return _move(spec.counterparty, target, currency, amount)
        case DebitCommand():
            assert spec.counterparty is not None, spec
            return _require(view, key, "available", amount) or _move(
                account("available"), spec.counterparty, currency, amount
            )
        case LockCommand():
            return _require(view, key, "available", amount) or _move(
                account("available"), account("locked"), currency, amount
            )
        case UnlockCommand():
            return _require(view, key, "locked", amount, command.hold) or _move(
                account("locked"), account("available"), currency, amount
            )
        case ReleaseLockedCommand():
            destination = external_account(command.destination)
            if destination != spec.counterparty:
                return _unregistered(command, f" to {destination}")
            return _require(view, key, "locked", amount, command.hold) or _split_fee(
                account("locked"), destination, currency, amount, command.fee_amount
            )
        case TransferCommand():
            if command.to_user == user:
                return Rejection("same_account", "a transfer needs two different users")
            return _require(view, key, "available", amount) or _move(
                account("available"),
                user_account(command.to_user, "available"),
                currency,
                amount,
            )
        case TransferLockedCommand():
            if command.to_user == user:
                return Rejection("same_account", "a transfer needs two different users")
            return _require(view, key, "locked", amount, command.hold) or _split_fee(
                account("locked"),
                user_account(command.to_user, "available"),
                currency,
                amount,
                command.fee_amount,
            )
        case ExchangeCommand():
            return _require(view, key, "available", amount) or (
                *_split_fee(
                    account("available"), PLATFORM_LIQUIDITY, currency, amount, command.fee_amount
                ),
                *_move(
                    PLATFORM_LIQUIDITY,
                    user_account(user, "available"),
                    command.receive_currency,
                    command.receive_amount,
                ),
            )
        case SettleTradeCommand():
            return _settle_trade(command, view)
        case SavingsInCommand():
            return _require(view, key, "available", amount) or _move(
                account("available"), account("savings"), currency, amount
            )
        case SavingsOutCommand():
            return _require(view, key, "savings", amount) or _move(
                account("savings"), account("available"), currency, amount
            )
    raise AssertionError(f"unhandled command type {command.type}")  # pragma: no cover


def _settle_trade(command: SettleTradeCommand, view: LedgerView) -> Decision:
    """One spot fill: the buyer's quote from its hold to the seller, the seller's base from its
    hold to the buyer, each side's fee out of what it receives; balanced per currency."""
    buyer, seller = command.user_id, command.to_user
    quote, base = command.currency, command.receive_currency
    if buyer == seller:
        return Rejection("same_account", "a trade needs two different users")
    return (
        _require(view, (buyer, quote), "locked", command.amount, command.hold)
        or _require(view, (seller, base), "locked", command.receive_amount, command.counter_hold_id)
        or (
            *_split_fee(
                user_account(buyer, "locked"),
                user_account(seller, "available"),
                quote,
                command.amount,
                command.fee_amount,
            ),
            *_split_fee(
                user_account(seller, "locked"),
                user_account(buyer, "available"),
                base,
                command.receive_amount,
                command.receive_fee_amount,
            ),
        )
    )


def hold_changes(command: WalletCommand) -> tuple[HoldChange, ...]:
    """How an applied command changes holds: a lock adds to its hold; unlock, release and locked
    transfer take from it; a trade takes from both sides' holds; a legacy locked balance arrives
    held under its reference."""
    key = (command.user_id, command.currency)
    match command:
        case LockCommand():
            return ((key, command.hold, command.amount),)
        case UnlockCommand() | ReleaseLockedCommand() | TransferLockedCommand():
            return ((key, command.hold, negate(command.amount)),)
        case SettleTradeCommand():
            return (
                (key, command.hold, negate(command.amount)),
                (
                    (command.to_user, command.receive_currency),
                    command.counter_hold_id,
                    negate(command.receive_amount),
                ),
            )
        case CreditCommand():
            spec = registered(command.transaction_type, command.type)
            if spec is not None and spec.credit_bucket == "locked":
                return ((key, command.reference_id, command.amount),)
    return ()


def with_hold(holds: Holds, hold: str, delta: Decimal) -> Holds:
    """`holds` with `delta` added under `hold`; a hold that reaches zero is gone."""
    current = dict(holds)
    amount = LEDGER_CONTEXT.add(current.get(hold, ZERO), delta)
    if amount < 0:
        raise ValueError(f"hold {hold} would go negative")
    if amount:
        current[hold] = amount
    else:
        current.pop(hold, None)
    return tuple(sorted(current.items()))


# A tuple built once: `A | B` in the call would build a union object per command.
_TRANSFERS: Final = (TransferCommand, TransferLockedCommand)
# Command types that touch only the payer's wallet of the command's currency.
_ONE_WALLET: Final = frozenset(
    {
        CreditCommand,
        DebitCommand,
        LockCommand,
        UnlockCommand,
        ReleaseLockedCommand,
        SavingsInCommand,
        SavingsOutCommand,
    }
)


def wallet_keys(command: WalletCommand) -> tuple[WalletKey, ...]:
    """The user wallets a command may touch: loaded before deciding, in one query per batch."""
    if type(command) in _ONE_WALLET:
        return ((command.user_id, command.currency),)
    keys: list[WalletKey] = [(command.user_id, command.currency)]
    if isinstance(command, _TRANSFERS):
        keys.append((command.to_user, command.currency))
    if isinstance(command, ExchangeCommand):
        keys.append((command.user_id, command.receive_currency))
    if isinstance(command, SettleTradeCommand):
        keys += [
            (command.to_user, command.receive_currency),
            (command.to_user, command.currency),
            (command.user_id, command.receive_currency),
        ]
    return tuple(dict.fromkeys(keys))


def floored_accounts(command: WalletCommand) -> tuple[AccountKey, ...]:
    """The floored platform accounts a command may take money from: read with the wallets."""
    if isinstance(command, ExchangeCommand):
        return ((PLATFORM_LIQUIDITY, command.receive_currency),)
    spec = registered(command.transaction_type, command.type)
    if spec is not None and isinstance(command, CreditCommand) and spec.counterparty in FLOORS:
        return ((spec.counterparty, command.currency),)
    return ()


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
