"""The command mix every benchmark runs: deterministic for a seed, with known expected outcomes.

About 60 % credits, 20 % debits, 10 % lock/unlock pairs, 10 % transfers (of the fresh commands),
then 5 % duplicates (a resend of an earlier command with a new command_id) and 1 % over-debits
(refused for insufficient funds) on top, in the same sequence. The ledger-only mix (`wave2=True`,
which the seed cannot run) adds swaps against platform:liquidity (each after a liquidity_funding
on the same key) and orders spent from a named hold in two steps.

Every command that is meant to apply does so whatever order Kafka partitions interleave in: the
amount a user spends is bounded by what that user's own earlier commands left, and those travel on
the same key (the payer) so they arrive first. Money received by transfer is never counted on, and
every swap's liquidity is funded by a command on the swapper's own key before it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from shared.messaging import WalletCommand, parse_command

CURRENCY: Final = "BTC"
SWAP_CURRENCY: Final = "ETH"  # what swaps receive from platform:liquidity
SATOSHI: Final = Decimal("0.00000001")
# Far more than any balance the mix builds up, within the currency's range.
OVER_DEBIT: Final = "1000000"

Command = dict[str, Any]  # the contract's JSON shape, without issued_at (set when sent)


def _btc(satoshis: int) -> str:
    return str((Decimal(satoshis) * SATOSHI).normalize())


ZERO: Final = Decimal(0)
WalletKey = tuple[str, str]  # (user_id, currency)
Balances = tuple[Decimal, Decimal, Decimal]  # (available, locked, total), as the wallet reports


@dataclass(slots=True)
class Wallet:
    """A user's balances of one currency, as the workload's model says they end."""

    available: Decimal = ZERO
    locked: Decimal = ZERO

    def reported(self) -> Balances:
        return (self.available, self.locked, self.available + self.locked)


@dataclass(slots=True)
class Workload:
    """The commands in sending order and what the ledger must answer to each of them."""

    commands: list[Command]
    expected: Counter[str] = field(default_factory=Counter)  # status → count
    kinds: Counter[str] = field(default_factory=Counter)  # what the mix holds, for the report
    # Per command_id: the status the ledger must answer, and for a duplicate what its first
    # delivery came to (the seed records no rejection, so it refuses a resent rejection again).
    status_of: dict[str, str] = field(default_factory=dict)
    original_of: dict[str, str] = field(default_factory=dict)
    # Every wallet's final balances once every command is applied, whatever the interleaving.
    balances: dict[WalletKey, Wallet] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.commands)

    def encoded(self, index: int, issued_at: datetime | None = None) -> bytes:
        """One command as the wire carries it, stamped with its issue time."""
        stamp = (issued_at or datetime.now(UTC)).isoformat()
        return json.dumps({**self.commands[index], "issued_at": stamp}).encode()

    def parsed(self) -> list[WalletCommand]:
        """The commands as the wallet decodes them (for the in-process runs)."""
        return [parse_command(self.encoded(i)) for i in range(len(self.commands))]

    def seed_status(self, command_id: str) -> str:
        """What the seed's design answers: a resent rejection is refused again, not a duplicate."""
        if self.original_of.get(command_id) == "rejected":
            return "rejected"
        return self.status_of[command_id]

    def wrong_outcomes(self, got: dict[str, str], *, seed: bool = False) -> list[str]:
        """Every command whose outcome differs from the model (missing ones included)."""
        wrong = []
        for command in self.commands:
            command_id = command["command_id"]
            want = self.seed_status(command_id) if seed else self.status_of[command_id]
            if got.get(command_id) != want:
                wrong.append(f"{command_id}: {got.get(command_id)} != {want}")
        return wrong

    def wrong_balances(self, got: dict[WalletKey, Balances]) -> list[str]:
        """Every wallet whose (available, locked, total) differs from the model; absent = zero."""
        zero = (ZERO, ZERO, ZERO)
        wrong = []
        for key in sorted(self.balances.keys() | got.keys()):
            want = self.balances[key].reported() if key in self.balances else zero
            if got.get(key, zero) != want:
                wrong.append(f"{key}: {got.get(key, zero)} != {want}")
        return wrong


def _apply(balances: dict[WalletKey, Wallet], command: Command) -> None:
    def wallet(user: str, currency: str) -> Wallet:
        return balances.setdefault((user, currency), Wallet())

    amount = Decimal(command["amount"])
    payer = wallet(command["user_id"], command["currency"])
    match command["type"]:
        case "credit" if command["transaction_type"] == "liquidity_funding":
            pass  # external:treasury → platform:liquidity: no user wallet changes
        case "credit":
            payer.available += amount
        case "debit":
            payer.available -= amount
        case "lock":
            payer.available -= amount
            payer.locked += amount
        case "unlock":
            payer.available += amount
            payer.locked -= amount
        case "transfer":
            payer.available -= amount
            wallet(command["to_user"], command["currency"]).available += amount
        case "exchange":  # no fee in the mix: all of amount to platform:liquidity
            payer.available -= amount
            received = Decimal(command["receive_amount"])
            wallet(command["user_id"], command["receive_currency"]).available += received
        case other:
            raise ValueError(f"the workload's model has no {other}")


def build_workload(
    count: int, *, users: int = 1000, seed: int = 5, tag: str = "b", wave2: bool = False
) -> Workload:
    """`count` commands over `users` users (at least 2); `tag` keeps ids apart between runs;
    `wave2` adds swaps and named-hold orders (the ledger's mix, not the seed's)."""
    if count < 1 or users < 2:
        raise ValueError("a workload needs at least one command and two users")
    rng = random.Random(seed)
    duplicates = round(count * 0.05)
    over_debits = round(count * 0.01)
    # Extra commands (duplicates, over-debits) land at random points of the fresh sequence.
    extras = ["duplicate"] * duplicates + ["over_debit"] * over_debits
    extra_at = sorted(rng.sample(range(count), len(extras)))
    rng.shuffle(extras)
    planned = dict(zip(extra_at, extras, strict=True))

    names = [f"{tag}-user-{n:05d}" for n in range(users)]
    index = {name: n for n, name in enumerate(names)}
    available = dict.fromkeys(names, 0)  # satoshis a user can spend, by its own commands only
    funded: list[str] = []
    commands: list[Command] = []
    workload = Workload(commands)
    pending: list[tuple[str, Command]] = []  # the rest of a pair or an order, same key

    first_status: dict[tuple[str, str, str], str] = {}  # idempotency key → first outcome

    def add(kind: str, command: Command, status: str = "applied") -> None:
        command_id = command["command_id"] = f"{tag}-{len(commands):07d}"
        commands.append(command)
        workload.kinds[kind] += 1
        workload.expected[status] += 1
        workload.status_of[command_id] = status
        key = (command["type"], command["transaction_type"], command["reference_id"])
        if status == "duplicate":
            workload.original_of[command_id] = first_status[key]
        else:
            first_status[key] = status
        if status == "applied":
            _apply(workload.balances, command)

    def base(kind: str, user: str, satoshis: int, transaction_type: str) -> Command:
        return {
            "type": kind,
            "reference_id": f"{tag}-ref-{len(commands):07d}",
            "transaction_type": transaction_type,
            "user_id": user,
            "currency": CURRENCY,
            "amount": _btc(satoshis),
            "metadata": {},
        }

    def add_wave2(roll: float, user: str, satoshis: int) -> None:
        if roll < 100:
            # Liquidity for the swap first, on the swapper's key, so that it is always there.
            funding = base("credit", user, satoshis, "liquidity_funding")
            add("liquidity_funding", {**funding, "currency": SWAP_CURRENCY})
            swap = base("exchange", user, satoshis, "swap")
            swap.update(receive_currency=SWAP_CURRENCY, receive_amount=_btc(satoshis))
            pending.append(("exchange", swap))
            return
        # An order: its hold named by the order, each step its own reference.
        whole = satoshis - satoshis % 2
        available[user] += satoshis - whole
        order = f"{tag}-order-{len(commands):07d}"
        lock = {**base("lock", user, whole, "spot_order"), "hold_id": order}
        add("order_lock", lock)
        for step in (1, 2):
            part = {**base("unlock", user, whole // 2, "spot_order"), "hold_id": order}
            part["reference_id"] = f"{order}-refund-{step}"
            pending.append(("unlock", part))

    def spender() -> tuple[str, int] | None:
        while funded:
            user = rng.choice(funded)
            if available[user] >= 4:
                return user, rng.randint(1, available[user] // 4)
            funded.remove(user)
        return None

    due: list[str] = []  # extras whose position came while a pair was still open
    while len(commands) < count:
        if len(commands) in planned:
            due.append(planned[len(commands)])
        if pending:
            # The rest of a lock/unlock pair (same reference, the seed's unlock_type), of a swap,
            # or of an order's steps.
            kind, follow = pending.pop(0)
            add(kind, follow)
            if kind == "unlock":
                available[follow["user_id"]] += int(Decimal(follow["amount"]) / SATOSHI)
            continue
        extra = due.pop(0) if due else None
        if extra == "duplicate" and commands:
            original = rng.choice(commands)
            # Same payload, new message: answered "duplicate" whatever the first outcome was.
            add("duplicate", {k: v for k, v in original.items() if k != "command_id"}, "duplicate")
            continue
        if extra == "over_debit":
            over = {**base("debit", rng.choice(names), 1, "withdrawal"), "amount": OVER_DEBIT}
            add("over_debit", over, "rejected")
            continue
        # Per fresh slot: credit 60, debit 20, lock/unlock pair 5 (ten commands), transfer 10;
        # with wave2 also swap 5 (funding + exchange) and order 3 (lock + two partial unlocks).
        roll = rng.random() * (103 if wave2 else 95)
        spend = spender() if roll >= 60 else None
        if spend is None:
            user = rng.choice(names)
            satoshis = rng.randint(100_000, 10_000_000)
            add("credit", base("credit", user, satoshis, "deposit_nowpayments"))
            if available[user] == 0:
                funded.append(user)
            available[user] += satoshis
            continue
        user, satoshis = spend
        available[user] -= satoshis
        if roll < 80:
            add("debit", base("debit", user, satoshis, "withdrawal"))
        elif roll < 85 and len(commands) + 1 < count:
            lock = base("lock", user, satoshis, "p2p_escrow")
            add("lock", lock)
            pending.append(
                ("unlock", {**lock, "type": "unlock", "transaction_type": "p2p_cancelled"})
            )
        elif roll >= 95 and len(commands) + 2 < count:
            add_wave2(roll, user, satoshis)
        else:
            receiver = names[(index[user] + rng.randint(1, users - 1)) % users]
            add(
                "transfer", {**base("transfer", user, satoshis, "p2p_payment"), "to_user": receiver}
            )
    return workload
