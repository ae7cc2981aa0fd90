"""parse_command decodes with a fast JSON decoder: it must answer exactly as the standard library
path it replaced, for every input (the same command, or the same refusal with the same reason,
detail and envelope)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as PydanticValidationError

from shared.messaging import InvalidCommand, parse_command
from shared.messaging.commands import (
    MAX_COMMAND_BYTES,
    WALLET_COMMAND,
    _envelope,
    _numbers_as_numbers,
    _refuse_constant,
    _refuse_unencodable,
    reason_for,
)


def standard_parse(raw: bytes | str) -> Any:
    """parse_command on the standard library's json alone: the answers the fast path must give."""
    if len(raw) > MAX_COMMAND_BYTES:
        raise InvalidCommand("message_too_large", f"more than {MAX_COMMAND_BYTES} bytes")
    try:
        document = json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidCommand("malformed_json", str(error)[:200]) from None
    if not isinstance(document, dict):
        raise InvalidCommand("not_an_object", "a command is a JSON object")
    try:
        _refuse_unencodable(document)  # a lone surrogate: refused before validation
        return WALLET_COMMAND.validate_python(_numbers_as_numbers(document))
    except InvalidCommand as error:
        error.envelope = _envelope(document)
        raise
    except PydanticValidationError as error:
        reason, detail = reason_for(error)
        raise InvalidCommand(reason, detail, _envelope(document)) from None


def answer(parse: Any, raw: bytes | str) -> Any:
    try:
        command = parse(raw)
    except InvalidCommand as error:
        return ("refused", error.reason, error.detail, error.envelope)
    except RecursionError:
        return ("recursion",)
    return ("command", command.model_dump())


VALID = {
    "command_id": "c-1",
    "type": "credit",
    "reference_id": "r-1",
    "transaction_type": "deposit_nowpayments",
    "user_id": "u-1",
    "currency": "BTC",
    "amount": "0.01",
    "issued_at": "2026-01-01T00:00:00+00:00",
}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
EDGE_CASES = [
    b'{"a":1,"a":2}',
    b'{"a":"\\ud800"}',
    b'\xef\xbb\xbf{"type":"credit"}',
    b'{"a":NaN}',
    b'{"amount":1e400}',
    b'{"amount":-1e-400}',
    b'{"a":"\xed\xa0\x80"}',
    b'{"a":1}x',
    b"[1]",
    b'"text"',
    '{"type":"credit"}'.encode("utf-16"),
    b"[" * 3000 + b"]" * 3000,
]


@given(metadata=st.dictionaries(st.text(max_size=6), json_values, max_size=4), field=json_values)
@settings(max_examples=300, deadline=None)
@example(metadata={}, field="0.01")
def test_the_fast_decoder_answers_as_the_standard_path(
    metadata: dict[str, Any], field: Any
) -> None:
    for document in (
        {**VALID, "metadata": metadata},
        {**VALID, "amount": field},
        {**VALID, "x": field},
    ):
        raw = json.dumps(document).encode()
        assert answer(parse_command, raw) == answer(standard_parse, raw)
        assert answer(parse_command, raw.decode()) == answer(standard_parse, raw.decode())


def test_edge_cases_of_json_answer_as_the_standard_path() -> None:
    numbers = [
        json.dumps({**VALID, "metadata": {"n": n}}).encode() for n in ("1e400", "1E2", "-0.0")
    ]
    raw_numbers = [r.replace(b'"1e400"', b"1e400").replace(b'"1E2"', b"1E2") for r in numbers]
    for raw in [*EDGE_CASES, *raw_numbers]:
        assert answer(parse_command, raw) == answer(standard_parse, raw), raw[:40]


def test_a_command_nested_deeper_than_python_parses_is_malformed_json() -> None:
    """Both decoders raise RecursionError on it: before, the intake dead-lettered it as
    processing_failed, a reason that says the wallet failed rather than the message."""
    depth = 20_000
    raw = json.dumps({**VALID, "metadata": {"x": 0}}).replace(
        "0}}", "[" * depth + "]" * depth + "}}"
    )
    with pytest.raises(InvalidCommand) as refused:
        parse_command(raw.encode())
    assert refused.value.reason == "malformed_json"
