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
TRANSACTION_TYPES: Final = {
    "credit": ("deposit_nowpayments", "referral_commission"),
    "debit": ("withdrawal", "fee"),
    "lock": ("p2p_escrow", "withdrawal_pending"),
    "unlock": ("p2p_escrow", "withdrawal_pending"),
    "release_locked": ("withdrawal_pending",),
    "transfer": ("internal_transfer",),
    "transfer_locked": ("p2p_completed",),
    "exchange": ("swap", "spot_trade"),
    "savings_in": ("savings",),
    "savings_out": ("savings",),
}


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
    # Credits are larger so that balances exist to spend and not every debit is refused.
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
    if kind in {"transfer", "transfer_locked"}:
        spec["to_user"] = other
    if kind in {"release_locked", "transfer_locked", "exchange"} and fee:
        spec["fee"] = str(fee)
    if kind == "release_locked" and pick % 2:
        spec["destination"] = "bank"
    if kind == "exchange":
        spec["receive_currency"] = next(c for c in CURRENCIES if c != currency)
        spec["receive_amount"] = str(Decimal(fee_quarters + 1) / 4)
    return spec


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
        pick=draw(st.integers(0, 3)),
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
        pick=rng.randint(0, 3),
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
