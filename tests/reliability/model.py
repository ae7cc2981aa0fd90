"""An exactly-once wallet written from the contract alone, to judge the real one against.

It shares no code with the ledger: plain dictionaries of balances, commands decided one at a time in
the order given, every idempotency key decided once. Whatever the delivery did (duplicates, crashes,
retries, reordering), the real wallet must end where this model ends for the same order of first
decisions, and answer every command the way the model does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.messaging import CommandResult, WalletCommand

Key = tuple[str, str, str]
WalletId = tuple[str, str]  # (user, currency)
Triple = tuple[Decimal, Decimal, Decimal]  # (available, locked, savings)

ZERO = Decimal(0)
AVAILABLE, LOCKED, SAVINGS = 0, 1, 2
# The bucket each command takes its amount from (credit takes from outside).
_PAID_FROM: dict[str, int | None] = {
    "credit": None,
    "debit": AVAILABLE,
    "lock": AVAILABLE,
    "unlock": LOCKED,
    "release_locked": LOCKED,
    "transfer": AVAILABLE,
    "transfer_locked": LOCKED,
    "exchange": AVAILABLE,
    "savings_in": AVAILABLE,
    "savings_out": SAVINGS,
    "settle_trade": LOCKED,
}
# Where moves between one user's own buckets put the amount.
_MOVED_INTO: dict[str, int] = {
    "lock": LOCKED,
    "unlock": AVAILABLE,
    "savings_in": SAVINGS,
    "savings_out": AVAILABLE,
}
# What makes a resend "the same request" (CONTRACT: same key and same money fields, an absent
# optional field counting as its default); a resend is a new message, so its id, send time and
# tracing metadata may differ.
_NOT_PAYLOAD = frozenset({"command_id", "issued_at", "metadata"})

_EXTERNAL = "external:"
# The registered transaction types as the contract lists them: command types allowed, the account
# money comes from (credits) or goes to (debit, release), and where a credit lands.
_REGISTRY: dict[str, tuple[frozenset[str], str | None, str]] = {
    "deposit_nowpayments": (frozenset({"credit"}), "external:nowpayments", "available"),
    "deposit_bank_transfer": (frozenset({"credit"}), "external:bank", "available"),
    "withdrawal": (frozenset({"debit", "release_locked"}), "external:withdrawals", ""),
    "withdrawal_lock": (frozenset({"lock"}), None, ""),
    "withdrawal_unlock": (frozenset({"unlock"}), None, ""),
    "withdrawal_release": (frozenset({"release_locked"}), "external:withdrawals", ""),
    "p2p_escrow": (frozenset({"lock"}), None, ""),
    "p2p_cancelled": (frozenset({"unlock"}), None, ""),
    "p2p_completed": (
        frozenset({"transfer_locked", "release_locked"}),
        "external:withdrawals",
        "",
    ),
    "p2p_payment": (frozenset({"transfer"}), None, ""),
    "swap": (frozenset({"exchange"}), None, ""),
    "express_buy": (frozenset({"exchange"}), None, ""),
    "spot_order": (frozenset({"lock", "unlock"}), None, ""),
    "spot_trade": (frozenset({"settle_trade"}), None, ""),
    "savings_deposit": (frozenset({"savings_in"}), None, ""),
    "savings_withdrawal": (frozenset({"savings_out"}), None, ""),
    "savings_interest": (frozenset({"credit"}), "platform:interest", "savings"),
    "referral_commission": (frozenset({"credit"}), "platform:fees", "available"),
    "liquidity_funding": (frozenset({"credit"}), "external:treasury", "platform:liquidity"),
    "legacy_migration": (frozenset({"credit"}), "external:legacy_migration", "available"),
    "legacy_migration_locked": (frozenset({"credit"}), "external:legacy_migration", "locked"),
    "legacy_migration_savings": (frozenset({"credit"}), "external:legacy_migration", "savings"),
    "legacy_unlock": (frozenset({"unlock"}), None, ""),
}
_BUCKET_INDEX = {"available": AVAILABLE, "locked": LOCKED, "savings": SAVINGS}
# Accounts that never go below zero, and the reason a command that would take them there gets.
_FLOORS = {
    "platform:liquidity": "insufficient_liquidity",
    "platform:fees": "insufficient_platform_funds",
}


def key_of(command: WalletCommand) -> Key:
    return (command.type, command.transaction_type, command.reference_id)


def payload_of(command: WalletCommand) -> dict[str, Any]:
    payload = {k: v for k, v in command.model_dump().items() if k not in _NOT_PAYLOAD}
    for name in ("fee", "receive_fee"):
        if name in payload and payload[name] is None:
            payload[name] = ZERO
    if "hold_id" in payload and payload["hold_id"] is None:
        payload["hold_id"] = command.reference_id
    return payload


def hold_of(command: WalletCommand) -> str:
    hold: str | None = getattr(command, "hold_id", None)
    return hold if hold is not None else command.reference_id


@dataclass(frozen=True)
class Expected:
    """What the answer to one delivery must say."""

    status: str  # applied | rejected | duplicate
    reason: str | None = None
    original_status: str | None = None
    # For a first decision: the balances the result reports (the wallets it touched, or looked at).
    balances: dict[WalletId, Triple] | None = None


@dataclass
class ExactlyOnceModel:
    wallets: dict[WalletId, list[Decimal]] = field(default_factory=dict)
    accounts: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    decided: dict[Key, tuple[dict[str, Any], str]] = field(default_factory=dict)
    # Locked money per (user, currency, hold): only a lock's own hold may spend it.
    holds: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)

    # -- state ---------------------------------------------------------------------------------
    def _wallet(self, user: str, currency: str) -> list[Decimal]:
        return self.wallets.setdefault((user, currency), [ZERO, ZERO, ZERO])

    def triple(self, user: str, currency: str) -> Triple:
        a, lk, s = self.wallets.get((user, currency), [ZERO, ZERO, ZERO])
        return (a, lk, s)

    def _account(self, name: str, currency: str, delta: Decimal) -> None:
        self.accounts[(name, currency)] = self.accounts.get((name, currency), ZERO) + delta

    def nonzero_accounts(self) -> dict[tuple[str, str], Decimal]:
        return {k: v for k, v in self.accounts.items() if v != 0}

    def nonzero_wallets(self) -> dict[WalletId, Triple]:
        return {k: (v[0], v[1], v[2]) for k, v in self.wallets.items() if any(v)}

    # -- deciding ------------------------------------------------------------------------------
    def run(self, commands: Iterable[WalletCommand]) -> list[Expected]:
        return [self.apply(c) for c in commands]

    def apply(self, command: WalletCommand) -> Expected:
        key = key_of(command)
        if key in self.decided:
            payload, status = self.decided[key]
            if payload == payload_of(command):
                return Expected("duplicate", original_status=status)
            return Expected("rejected", reason="idempotency_conflict")
        expected = self._decide(command)
        self.decided[key] = (payload_of(command), expected.status)
        return expected

    def _decide(self, c: WalletCommand) -> Expected:
        user, cur, amount = c.user_id, c.currency, c.amount
        payer = self._wallet(user, cur)
        fee: Decimal = getattr(c, "fee", None) or ZERO
        to_user: str | None = getattr(c, "to_user", None)
        looked_at: list[WalletId] = [(user, cur)]
        if c.type == "settle_trade":
            assert to_user is not None
            looked_at += [(to_user, c.receive_currency), (user, c.receive_currency)]
        if to_user is not None:
            looked_at.append((to_user, cur))
        if c.type == "exchange":
            looked_at.append((user, c.receive_currency))

        def refuse(reason: str) -> Expected:
            return Expected(
                "rejected", reason=reason, balances={w: self.triple(*w) for w in looked_at}
            )

        registered = _REGISTRY.get(c.transaction_type)
        if registered is None or c.type not in registered[0]:
            return refuse("unknown_transaction_type")
        _, counterparty, credit_into = registered
        if c.type == "release_locked" and _EXTERNAL + c.destination != counterparty:
            return refuse("unknown_transaction_type")
        if to_user == user:
            return refuse("same_account")
        paid_from = _PAID_FROM[c.type]
        if paid_from is not None and payer[paid_from] < amount:
            return refuse("insufficient_funds")
        hold = (user, cur, hold_of(c))
        if paid_from == LOCKED and self.holds.get(hold, ZERO) < amount:
            return refuse("insufficient_funds")
        if c.type == "settle_trade":
            assert to_user is not None
            counter = (to_user, c.receive_currency, c.counter_hold_id)
            seller = self._wallet(to_user, c.receive_currency)
            if (
                seller[LOCKED] < c.receive_amount
                or self.holds.get(counter, ZERO) < c.receive_amount
            ):
                return refuse("insufficient_funds")
        if c.type == "exchange":
            liquidity = self.accounts.get(("platform:liquidity", c.receive_currency), ZERO)
            if liquidity < c.receive_amount:
                return refuse(_FLOORS["platform:liquidity"])
        floored = counterparty if c.type == "credit" and counterparty in _FLOORS else None
        if floored is not None and self.accounts.get((floored, cur), ZERO) < amount:
            return refuse(_FLOORS[floored])

        if paid_from == LOCKED:
            self.holds[hold] -= amount
        elif c.type == "lock":
            self.holds[hold] = self.holds.get(hold, ZERO) + amount

        touched: list[WalletId] = [(user, cur)]
        if paid_from is not None:
            payer[paid_from] -= amount
        match c.type:
            case "credit":
                assert counterparty is not None
                self._account(counterparty, cur, -amount)
                if credit_into in _BUCKET_INDEX:
                    payer[_BUCKET_INDEX[credit_into]] += amount
                    if credit_into == "locked":
                        self.holds[hold] = self.holds.get(hold, ZERO) + amount
                else:
                    self._account(credit_into, cur, amount)
                    touched = []
            case "debit":
                assert counterparty is not None
                self._account(counterparty, cur, amount)
            case "lock" | "unlock" | "savings_in" | "savings_out":
                payer[_MOVED_INTO[c.type]] += amount
            case "release_locked":
                self._account(_EXTERNAL + c.destination, cur, amount - fee)
                self._account("platform:fees", cur, fee)
            case "transfer" | "transfer_locked":
                assert to_user is not None
                self._wallet(to_user, cur)[AVAILABLE] += amount - fee
                self._account("platform:fees", cur, fee)
                touched.append((to_user, cur))
            case "exchange":
                self._account("platform:fees", cur, fee)
                self._account("platform:liquidity", cur, amount - fee)
                self._account("platform:liquidity", c.receive_currency, -c.receive_amount)
                self._wallet(user, c.receive_currency)[AVAILABLE] += c.receive_amount
                touched.append((user, c.receive_currency))
            case "settle_trade":
                assert to_user is not None
                base, received = c.receive_currency, c.receive_amount
                receive_fee = c.receive_fee or ZERO
                self._wallet(to_user, cur)[AVAILABLE] += amount - fee
                self._account("platform:fees", cur, fee)
                self._wallet(to_user, base)[LOCKED] -= received
                self.holds[(to_user, base, c.counter_hold_id)] -= received
                self._wallet(user, base)[AVAILABLE] += received - receive_fee
                self._account("platform:fees", base, receive_fee)
                touched += [(to_user, cur), (to_user, base), (user, base)]
        return Expected("applied", balances={w: self.triple(*w) for w in touched})

    def negative_holds(self) -> dict[tuple[str, str, str], Decimal]:
        return {k: v for k, v in self.holds.items() if v < 0}


def reported_balances(result: CommandResult) -> dict[WalletId, Triple]:
    """The balances a result reports, checking total = available + locked on each."""
    reported: dict[WalletId, Triple] = {}
    for b in result.balances:
        assert b.total_balance == b.available_balance + b.locked_balance, b
        reported[(b.user_id, b.currency)] = (
            b.available_balance,
            b.locked_balance,
            b.savings_balance,
        )
    return reported


def check_answer(command: WalletCommand, result: CommandResult, expected: Expected) -> None:
    """The real answer to one delivery says what the model says it must."""
    where = f"{command.type} {command.reference_id} ({command.command_id})"
    assert result.command_id == command.command_id, where
    assert result.status == expected.status, (where, result, expected)
    if expected.status == "rejected":
        assert result.reason == expected.reason, (where, result, expected)
    if expected.status == "duplicate":
        assert result.original_status == expected.original_status, (where, result, expected)
    if expected.balances is not None:
        assert reported_balances(result) == expected.balances, (where, result, expected)
