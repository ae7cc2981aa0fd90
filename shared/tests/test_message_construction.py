"""The outgoing messages' faster `model_construct` builds exactly what pydantic's builds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from shared.messaging import (
    BalanceSnapshot,
    CommandResult,
    DeadLetter,
    LedgerTransaction,
    Posting,
    encode,
)
from shared.messaging.outcomes import assemble

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
SNAPSHOT: dict[str, Any] = {
    "user_id": "u",
    "currency": "BTC",
    "available_balance": Decimal("1.50"),
    "locked_balance": Decimal(0),
    "savings_balance": Decimal("0E-8"),
    "total_balance": Decimal("1.5"),
}
POSTING: dict[str, Any] = {
    "account": "user:u:available",
    "currency": "BTC",
    "amount": Decimal("-0.1"),
}
COMPLETE: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (BalanceSnapshot, SNAPSHOT),
    (Posting, POSTING),
    (
        CommandResult,
        {
            "command_id": "c",
            "type": "credit",
            "transaction_type": "deposit_nowpayments",
            "reference_id": "r",
            "user_id": "u",
            "status": "duplicate",
            "reason": None,
            "detail": None,
            "original_status": "applied",
            "transaction_id": "t",
            "balances": [BalanceSnapshot.model_construct(**SNAPSHOT)],
            "processed_at": NOW,
        },
    ),
    (
        LedgerTransaction,
        {
            "transaction_id": "t",
            "command_id": "c",
            "type": "transfer",
            "transaction_type": "p2p_payment",
            "reference_id": "r",
            "user_id": "u",
            "to_user": "v",
            "postings": [Posting.model_construct(**POSTING)],
            "metadata": {"trace": [1, 2.5, None]},
            "occurred_at": NOW,
        },
    ),
    (
        DeadLetter,
        {
            "reason": "malformed_json",
            "detail": "x",
            "raw_value": "{",
            "key": None,
            "source_topic": "wallet.commands",
            "source_partition": 2,
            "source_offset": 9,
            "failed_at": NOW,
        },
    ),
]


def state(message: BaseModel) -> tuple[Any, ...]:
    return (
        type(message),
        list(message.__dict__.items()),  # the order too: serialisation follows it
        message.model_fields_set,
        message.__pydantic_extra__,
        message.__pydantic_private__,
        encode(message),
    )


@pytest.mark.parametrize(("model", "values"), COMPLETE, ids=lambda v: getattr(v, "__name__", ""))
def test_every_field_given_in_any_order_builds_what_pydantic_builds(
    model: type[BaseModel], values: dict[str, Any]
) -> None:
    reference = BaseModel.model_construct.__func__(model, **values)  # type: ignore[attr-defined]
    assert set(values) == set(model.model_fields)  # a complete set of fields, or this proves less
    assert state(model.model_construct(**values)) == state(reference)
    shuffled = dict(reversed(values.items()))
    assert state(model.model_construct(**shuffled)) == state(reference)
    assert model.model_construct(**values) == model.model_validate(reference.model_dump())


def test_fewer_fields_or_an_explicit_fields_set_take_pydantic_own_path() -> None:
    partial = {k: v for k, v in COMPLETE[2][1].items() if k not in {"reason", "balances"}}
    built = CommandResult.model_construct(**partial)
    assert built.reason is None
    assert built.balances == []  # the default, filled in as pydantic does
    assert built.model_fields_set == set(partial)
    explicit = Posting.model_construct({"account"}, **POSTING)
    assert explicit.model_fields_set == {"account"}


@pytest.mark.parametrize(
    ("model", "values"), COMPLETE[:4], ids=lambda v: getattr(v, "__name__", "")
)
def test_assemble_builds_what_pydantic_builds(model: type[Any], values: dict[str, Any]) -> None:
    reference = BaseModel.model_construct.__func__(model, **values)  # type: ignore[attr-defined]
    built = assemble(model, dict(values))
    assert state(built) == state(reference)
    assert built == model.model_validate(reference.model_dump())
    # Each message its own field set, as pydantic gives it.
    assert built.model_fields_set is not assemble(model, dict(values)).model_fields_set
