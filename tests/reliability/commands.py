"""Random wallet commands over a few users and currencies, small enough that funds run out often."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

from hypothesis import strategies as st

from shared.messaging import (
    COMMAND_TYPES,
    CreditCommand,
    DebitCommand,
    TransferCommand,
    WalletCommand,
)
from shared.messaging.commands import WALLET_COMMAND

USERS: Final = ("alice", "bob", "carol")
CURRENCIES: Final = ("BTC", "ETH", "USD")
# Quarter units fit every currency above; a one-wei ETH tail checks 18 decimal places stay exact.
ETH_TAIL: Final = Decimal("0.000000000000000001")
# Registered types (CONTRACT.md), plus a few that are not, or not for that command type: those
# must be rejected unknown_transaction_type and move nothing.
TRANSACTION_TYPES: Final = {
    "credit": (
        "deposit_nowpayments",
        "liquidity_funding",
        "referral_commission",
        "savings_interest",
        "legacy_migration_locked",
        "deposit_printer",
    ),
    "debit": ("withdrawal", "fee"),
    "lock": ("p2p_escrow", "spot_order", "withdrawal_lock"),
    "unlock": ("p2p_cancelled", "spot_order", "legacy_unlock", "p2p_escrow"),
    "release_locked": ("withdrawal_release", "withdrawal", "p2p_completed"),
    "transfer": ("p2p_payment",),
    "transfer_locked": ("p2p_completed",),
    "exchange": ("swap", "express_buy", "spot_trade"),
    "savings_in": ("savings_deposit",),
    "savings_out": ("savings_withdrawal",),
    "settle_trade": ("spot_trade",),
}
# Holds named apart from references (an order spent in several steps), shared across commands.
HOLD_NAMES: Final = ("book", "order-1")
_HOLDING: Final = frozenset({"lock", "unlock", "release_locked", "transfer_locked", "settle_trade"})


def make_command(spec: dict[str, Any]) -> WalletCommand:
    return WALLET_COMMAND.validate_python(spec)


def spec_from(
    kind: str,
    user: str,
    other: str,
    currency: str,
    quarters: int,
    fee_quarters: int,
    tail: bool,
    pick: int,
    reference: str,
    command_id: str | None = None,
) -> dict[str, Any]:
    """A valid command spec: amounts in quarters, the fee below the amount, every field as the
    contract allows it."""
    # Credits are larger so that balances exist to spend and not every debit is refused; a fill
    # is smaller than the orders' holds it is paid from, so that some fills can be settled.
    if kind == "settle_trade":
        quarters = quarters % 4 + 1
    scale = 3 if kind == "credit" else 1
    amount = Decimal(quarters * scale) / 4 + (ETH_TAIL if tail and currency == "ETH" else 0)
    types = TRANSACTION_TYPES[kind]
    spec: dict[str, Any] = {
        "type": kind,
        "command_id": command_id or uuid.uuid4().hex,
        "reference_id": reference,
        "transaction_type": types[pick % len(types)],
        "user_id": user,
        "currency": currency,
        "amount": str(amount),
        "metadata": {"source": "reliability"},
    }
    fee = Decimal(fee_quarters % quarters) / 4
    if kind in {"transfer", "transfer_locked", "settle_trade"}:
        spec["to_user"] = other
    if kind in {"release_locked", "transfer_locked", "exchange", "settle_trade"} and fee:
        spec["fee"] = str(fee)
    if kind in _HOLDING and pick in {2, 3}:
        spec["hold_id"] = HOLD_NAMES[fee_quarters % len(HOLD_NAMES)]
    if kind == "settle_trade":
        # Fills spend orders' holds: mostly the busiest named one (each user has their own under
        # that name), sometimes the fill's reference, which no lock may have used.
        spec["hold_id"] = HOLD_NAMES[0] if pick > 1 else reference
        spec["counter_hold_id"] = HOLD_NAMES[0] if pick else reference
    if kind == "release_locked" and pick == 1:
        spec["destination"] = "bank"  # not where any registered type releases to
    if kind in {"exchange", "settle_trade"}:
        spec["receive_currency"] = next(c for c in CURRENCIES if c != currency)
        spec["receive_amount"] = str(Decimal(fee_quarters % 4 + 1) / 4)
    if kind == "settle_trade" and fee_quarters % 4 > 1:
        spec["receive_fee"] = str(Decimal(fee_quarters % 4 // 2) / 4)
    return spec


def order_fill_specs(
    buyer: str, seller: str, quote: str, quarters: int, fee_quarters: int, tag: str
) -> list[dict[str, Any]]:
    """Two orders and a fill between them: the buyer locks `quarters`/4 of the quote under its
    order's hold, the seller locks some base under its own, and a fill settles part of both (each
    side's fee out of what it receives), each step its own idempotent command."""
    base = next(c for c in CURRENCIES if c != quote)
    amount = Decimal(quarters) / 4
    receive = Decimal(fee_quarters % 4 + 1) / 4

    def lock(user: str, currency: str, locked: Decimal, hold: str) -> dict[str, Any]:
        return {
            "type": "lock",
            "reference_id": f"{hold}:lock",
            "hold_id": hold,
            "transaction_type": "spot_order",
            "user_id": user,
            "currency": currency,
            "amount": str(locked),
        }

    fill: dict[str, Any] = {
        "type": "settle_trade",
        "reference_id": f"{tag}:fill",
        "transaction_type": "spot_trade",
        "user_id": buyer,
        "to_user": seller,
        "currency": quote,
        "amount": str(amount),
        "hold_id": f"{tag}:buy",
        "receive_currency": base,
        "receive_amount": str(receive),
        "counter_hold_id": f"{tag}:sell",
    }
    if fee_quarters % quarters:
        fill["fee"] = str(Decimal(fee_quarters % quarters) / 4)
    if fee_quarters % 4:
        fill["receive_fee"] = str(Decimal(fee_quarters % 4) / 8 if base != "USD" else "0.01")
    # The buyer's order holds a bit more than this fill (a later fill or a refund would spend it).
    return [
        lock(buyer, quote, amount + Decimal(1) / 4, f"{tag}:buy"),
        lock(seller, base, receive, f"{tag}:sell"),
        fill,
    ]


# Credits come four times as often as anything else, so that balances exist to spend.
KINDS: Final = ("credit", "credit", "credit", *COMMAND_TYPES)


@st.composite
def command_specs(draw: st.DrawFn, reference: st.SearchStrategy[str]) -> dict[str, Any]:
    return spec_from(
        kind=draw(st.sampled_from(KINDS)),
        user=draw(st.sampled_from(USERS)),
        # Mostly another user; sometimes the same one, which a transfer must refuse.
        other=draw(st.sampled_from(USERS)),
        currency=draw(st.sampled_from(CURRENCIES)),
        quarters=draw(st.integers(1, 40)),
        fee_quarters=draw(st.integers(0, 8)),
        tail=draw(st.booleans()),
        pick=draw(st.integers(0, 5)),
        reference=draw(reference),
    )


def random_spec(rng: random.Random, reference: str) -> dict[str, Any]:
    """The same distribution as `command_specs`, from a seeded generator."""
    return spec_from(
        kind=rng.choice(KINDS),
        user=rng.choice(USERS),
        other=rng.choice(USERS),
        currency=rng.choice(CURRENCIES),
        quarters=rng.randint(1, 40),
        fee_quarters=rng.randint(0, 8),
        tail=rng.random() < 0.5,
        pick=rng.randint(0, 5),
        reference=reference,
        command_id=f"{rng.getrandbits(64):016x}",
    )


def resend(command: WalletCommand, **changes: Any) -> WalletCommand:
    """The same request sent again as a new message (new id, new metadata), or with `changes`."""
    spec = command.model_dump(mode="json")
    spec.update(command_id=uuid.uuid4().hex, metadata={"resent": True}, **changes)
    return make_command(spec)


def conflicting(command: WalletCommand) -> WalletCommand:
    """Another request under the same idempotency key: a different amount."""
    return resend(command, amount=str(command.amount + Decimal("0.25")))


def deposit(user: str, currency: str, amount: str, reference: str) -> CreditCommand:
    return CreditCommand(
        user_id=user,
        currency=currency,
        amount=amount,
        transaction_type="deposit_nowpayments",
        reference_id=reference,
    )


def withdrawals(user: str, amount: str, count: int) -> list[DebitCommand]:
    """`count` debits of `amount` BTC, each its own request."""
    return [
        DebitCommand(
            user_id=user,
            currency="BTC",
            amount=amount,
            transaction_type="withdrawal",
            reference_id=f"w{i}",
        )
        for i in range(count)
    ]


def transfer_stream(
    rng: random.Random, count: int, users: Sequence[str], currencies: Sequence[str], most: int
) -> list[TransferCommand]:
    """Transfers between overlapping users of up to `most` quarters, some more than the payer has."""
    stream = []
    for index in range(count):
        payer, payee = rng.sample(list(users), 2)
        stream.append(
            TransferCommand(
                user_id=payer,
                to_user=payee,
                currency=rng.choice(list(currencies)),
                amount=str(Decimal(rng.randint(1, most)) / 4),
                transaction_type="p2p_payment",
                reference_id=f"t{index}",
            )
        )
    return stream
