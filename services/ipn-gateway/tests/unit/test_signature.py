"""IPN signatures: the fixture vectors made by NOWPayments' own JavaScript recipe, byte flips,
and ECMAScript number formatting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipn_gateway.domain.errors import IpnRejected
from ipn_gateway.domain.js_json import JsonNumber, js_canonical, js_number_to_string, parse_json
from ipn_gateway.domain.signature import sign, signature_matches, verify_ipn

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nowpayments_ipn_vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(FIXTURES.read_text())


@pytest.mark.parametrize(
    "vector", VECTORS, ids=lambda v: json.loads(v["raw_body"])["payment_status"]
)
def test_vector_canonical_form_and_signature(vector: dict[str, Any]) -> None:
    body = parse_json(vector["raw_body"].encode())
    assert js_canonical(body) == vector["canonical"]
    assert sign(body, vector["ipn_secret"]) == vector["signature"]
    verified = verify_ipn(vector["raw_body"].encode(), vector["signature"], vector["ipn_secret"])
    assert verified == body


@pytest.mark.parametrize("index", range(len(VECTORS)))
def test_every_single_byte_change_fails(index: int) -> None:
    vector = VECTORS[index]
    raw = vector["raw_body"].encode()
    variants = 0
    for position in range(len(raw)):
        changed = raw[position] ^ 0x01, ord("8") if raw[position] == ord("7") else ord("7")
        for replacement in changed:
            tampered = raw[:position] + bytes([replacement]) + raw[position + 1 :]
            with pytest.raises(IpnRejected) as refused:
                verify_ipn(tampered, vector["signature"], vector["ipn_secret"])
            assert refused.value.code in {"invalid_signature", "invalid_json"}, position
            variants += 1
    assert variants == 2 * len(raw)


@pytest.mark.parametrize("index", range(len(VECTORS)))
def test_changed_signature_or_secret_fails(index: int) -> None:
    vector = VECTORS[index]
    raw, signature, secret = vector["raw_body"].encode(), vector["signature"], vector["ipn_secret"]
    body = parse_json(raw)
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert not signature_matches(body, flipped, secret)
    assert not signature_matches(body, signature.upper(), secret)
    assert not signature_matches(body, signature[:-1], secret)
    assert not signature_matches(body, signature, secret + "x")
    assert not signature_matches(body, signature, "")
    for missing in (None, "", "   "):
        with pytest.raises(IpnRejected) as refused:
            verify_ipn(raw, missing, secret)
        assert refused.value.code == "invalid_signature"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e-7, "1e-7"),
        (5e-7, "5e-7"),
        (0.0000095, "0.0000095"),
        (0.000001, "0.000001"),
        (1.234e-7, "1.234e-7"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (123456789012345680000.0, "123456789012345680000"),
        (1e20, "100000000000000000000"),
        (-0.0, "0"),
        (0.0, "0"),
        (100.0, "100"),
        (-42.0, "-42"),
        (250.5, "250.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (2.0**53, "9007199254740992"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (float("nan"), "NaN"),
    ],
)
def test_js_number_to_string(value: float, expected: str) -> None:
    assert js_number_to_string(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0000095", "0.0000095"),
        ("5e-7", "5e-7"),
        ("5E-7", "5e-7"),
        ("1.50", "1.5"),
        ("1e2", "100"),
        ("-0", "0"),
        ("12345678901234567890", "12345678901234567000"),
        ("1e400", "null"),  # JSON.parse gives Infinity; JSON.stringify writes null
        ("1e-400", "0"),
    ],
)
def test_numbers_print_as_javascript_prints_them(text: str, expected: str) -> None:
    assert js_canonical(JsonNumber(text)) == expected


def test_keys_sorted_recursively_by_utf16_with_integer_keys_first() -> None:
    raw = '{"b":1,"a":{"z":true,"y":null},"10":"x","9":"y","01":"z","\U0001f600":1,"\uffff":2}'
    assert js_canonical(parse_json(raw.encode())) == (
        '{"9":"y","10":"x","01":"z","a":{"y":null,"z":true},"b":1,"\U0001f600":1,"\uffff":2}'
    )


def test_arrays_become_objects_as_sort_object_makes_them() -> None:
    body = parse_json(b'{"list":[3,{"b":1,"a":2},[]],"empty":{}}')
    assert js_canonical(body) == '{"empty":{},"list":{"0":3,"1":{"a":2,"b":1},"2":{}}}'


def test_strings_are_escaped_like_json_stringify() -> None:
    raw = '{"s":"quote \\" backslash \\\\ nl \\n tab \\t ctl \\u0001 del \\u007f lone \\ud800 é ✓ / "}'
    assert js_canonical(parse_json(raw.encode())) == (
        '{"s":"quote \\" backslash \\\\ nl \\n tab \\t ctl \\u0001 del \x7f lone \\ud800 é ✓ / "}'
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b"\xff\xfe{}",
        b"[" * 40 + b"]" * 40,
    ],
)
def test_bodies_that_are_refused(raw: bytes) -> None:
    with pytest.raises(IpnRejected) as refused:
        verify_ipn(raw, "0" * 128, "secret")
    assert refused.value.code == "invalid_signature"  # no signature can match it: 401


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_js_number_text_parses_back_to_the_same_double(value: float) -> None:
    text = js_number_to_string(value)
    assert float(text) == value or (value == 0 and float(text) == 0)
    assert "e" not in text or not (1e-6 <= abs(value) < 1e21)


def test_a_signed_body_holding_text_utf8_cannot_encode_is_refused_after_the_signature() -> None:
    """JavaScript signs a lone surrogate as its escape; nothing here could store or log it (it
    answered 500 where the review id was made)."""
    body = parse_json(b'{"payment_id":5077125051,"payment_status":"finished\\ud800"}')
    raw = b'{"payment_id":5077125051,"payment_status":"finished\\ud800"}'
    assert isinstance(body, dict)
    with pytest.raises(IpnRejected) as refused:
        verify_ipn(raw, sign(body, "secret"), "secret")
    assert refused.value.code == "invalid_text"
    assert "payment_status" in refused.value.message
    with pytest.raises(IpnRejected) as unsigned:
        verify_ipn(raw, "0" * 128, "secret")
    assert unsigned.value.code == "invalid_signature"  # the signature is checked first
