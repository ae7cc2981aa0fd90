"""The directly built canonical fingerprint is exactly what the json.dumps form was."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.messaging import canonical_fingerprint, parse_command
from shared.messaging.commands import (
    _AMOUNT_FIELDS,
    _COMMAND_CLASSES,
    _DEFAULTS,
    MONEY_FIELDS,
    _money_fields_of,
)
from shared.money import format_amount, parse_decimal


def fingerprint_as_before(fields: str | dict[str, Any]) -> str:
    """canonical_fingerprint as it was written before it built its JSON directly."""
    document = json.loads(fields) if isinstance(fields, str) else fields
    command_type = _COMMAND_CLASSES.get(str(document.get("type")))
    names = _money_fields_of(command_type) if command_type else MONEY_FIELDS
    canonical: dict[str, str] = {}
    for name in names:
        value = document.get(name)
        if value is None:
            value = document.get("reference_id") if name == "hold_id" else _DEFAULTS.get(name)
        if value is None:
            continue
        if name in _AMOUNT_FIELDS:
            value = format_amount(value if isinstance(value, Decimal) else parse_decimal(value))
        canonical[name] = str(value)
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"))


texts = st.text(max_size=12)  # any unicode: quotes, backslashes, control and non-ASCII characters
amounts = st.decimals(min_value=Decimal(0), max_value=Decimal(10**12), places=8).map(
    lambda d: d if d.is_finite() else Decimal(1)
)
amount_values = st.one_of(amounts, amounts.map(str), st.none())
documents = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(sorted(_COMMAND_CLASSES)), texts, st.none())},
    optional={
        name: (amount_values if name in _AMOUNT_FIELDS else st.one_of(texts, st.none()))
        for name in MONEY_FIELDS
        if name != "type"
    }
    | {"command_id": texts, "metadata": st.just({"k": "v"})},
)


@given(documents)
def test_the_fingerprint_of_any_fields_is_the_json_dumps_form(document: dict[str, Any]) -> None:
    assert canonical_fingerprint(document) == fingerprint_as_before(document)


@given(documents)
def test_a_stored_fingerprint_canonicalises_as_before(document: dict[str, Any]) -> None:
    stored = json.dumps({k: str(v) if isinstance(v, Decimal) else v for k, v in document.items()})
    assert canonical_fingerprint(stored) == fingerprint_as_before(stored)


@given(
    st.sampled_from(sorted(_COMMAND_CLASSES)),
    st.text(alphabet='abc\u00fc"\\\u65e5', min_size=1, max_size=8),
    st.sampled_from(["0.0100", "1", "0.5E+1"]),
)
def test_a_commands_fingerprint_is_as_before(command_type: str, user: str, amount: str) -> None:
    every_field = {
        "type": command_type,
        "reference_id": "r-1",
        "transaction_type": "deposit_nowpayments",
        "user_id": user,
        "currency": "BTC",
        "amount": amount,
        "to_user": "other",
        "fee": "0.001",
        "receive_currency": "ETH",
        "receive_amount": "1.5",
        "receive_fee": "0",
        "hold_id": "h",
        "counter_hold_id": "c",
    }
    command_class = _COMMAND_CLASSES[command_type]
    document = {k: v for k, v in every_field.items() if k in command_class.model_fields}
    command = parse_command(json.dumps(document))
    fields = {name: getattr(command, name) for name in _money_fields_of(type(command))}
    assert command.fingerprint() == fingerprint_as_before(fields)
