"""JavaScript's view of a JSON body, for checking NOWPayments' signatures.

NOWPayments signs `JSON.stringify(sortObject(body))` computed by Node.js, where `sortObject` sorts
keys recursively. To get the same bytes we must reproduce what JavaScript does, not what Python's
`json` does: numbers are IEEE doubles printed by ECMAScript's Number::toString, keys are sorted by
UTF-16 code units, integer-like keys come first in numeric order, arrays pass through `sortObject`
and so become objects keyed "0", "1", ..., and strings are escaped by QuoteJSONString.

Only this module deals in floats: they are how JavaScript sees the numbers, and the result is a
string to be signed, never an amount. Amounts are read from `JsonNumber.text` with `Decimal`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from ipn_gateway.domain.errors import IpnRejected

# JSON as parsed here: JsonNumber keeps each number's text exactly as sent.
type JsonValue = bool | str | JsonNumber | list[JsonValue] | dict[str, JsonValue] | None

MAX_DEPTH: Final = 32
_MAX_ARRAY_INDEX: Final = 2**32 - 2


@dataclass(frozen=True, slots=True)
class JsonNumber:
    """A JSON number as written in the body ("0.0000095", "5e-7", "100")."""

    text: str

    def to_double(self) -> float:
        """The double JavaScript's JSON.parse makes of it (correctly rounded, like float())."""
        return float(self.text)

    def to_decimal(self) -> Decimal:
        return Decimal(self.text)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _object_without_duplicates(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    # Two values for one key would let the signed object and the processed one differ.
    result: dict[str, JsonValue] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def parse_json(raw: bytes) -> JsonValue:
    """Parse UTF-8 JSON keeping every number's text; raises IpnRejected("invalid_json")."""
    try:
        text = raw.decode("utf-8")
        value: JsonValue = json.loads(
            text,
            parse_float=JsonNumber,
            parse_int=JsonNumber,
            parse_constant=_refuse_constant,
            object_pairs_hook=_object_without_duplicates,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise IpnRejected("invalid_json", f"body is not valid JSON: {str(error)[:120]}") from None
    _check_depth(value)
    return value


def _check_depth(value: JsonValue) -> None:
    stack: list[tuple[JsonValue, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise IpnRejected("invalid_json", f"JSON nested deeper than {MAX_DEPTH}")
        if isinstance(current, dict):
            stack.extend((child, depth + 1) for child in current.values())
        elif isinstance(current, list):
            stack.extend((child, depth + 1) for child in current)


def js_number_to_string(value: float) -> str:
    """ECMAScript Number::toString(value) for radix 10, exactly.

    Python's repr gives the shortest digits that round-trip (the closest such, as ECMAScript
    requires); only the layout differs: JavaScript writes plain digits for exponents in
    [-7, 21) and `1.5e-7` / `1e+21` style outside it.
    """
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"  # -0 too
    if value < 0:
        return "-" + js_number_to_string(-value)
    if math.isinf(value):
        return "Infinity"
    _, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    k = len(digits)  # value = digits × 10^(n − k)
    n = exponent + k
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    exponent_text = f"e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    if k == 1:
        return digits + exponent_text
    return digits[0] + "." + digits[1:] + exponent_text


_ESCAPES: Final = {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}


def js_quote(text: str) -> str:
    """QuoteJSONString: short escapes, \\u00xx for other controls and lone surrogates, rest as is."""
    parts = ['"']
    for char in text:
        code = ord(char)
        if code in _ESCAPES:
            parts.append(_ESCAPES[code])
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(char)
    parts.append('"')
    return "".join(parts)


def _is_array_index(key: str) -> bool:
    return key.isascii() and key.isdigit() and str(int(key)) == key and int(key) <= _MAX_ARRAY_INDEX


def _utf16_order(key: str) -> bytes:
    # Array.prototype.sort() compares UTF-16 code units; big-endian UTF-16 bytes compare the same.
    return key.encode("utf-16-be", "surrogatepass")


def _property_order(keys: list[str]) -> list[str]:
    """The order JavaScript enumerates an object's own keys, given their insertion order.

    Integer-like keys come first in ascending numeric order whatever the insertion order; the
    other keys keep insertion order (which `sortObject` makes the UTF-16 sort order).
    """
    indices = sorted((k for k in keys if _is_array_index(k)), key=int)
    return indices + [k for k in keys if not _is_array_index(k)]


def sort_object(value: JsonValue) -> JsonValue:
    """NOWPayments' `sortObject`: keys sorted (UTF-16 order) at every level, arrays included.

    `typeof [] === "object"`, so an array comes out as an object keyed "0", "1", ...
    """
    if isinstance(value, list):
        return sort_object({str(i): item for i, item in enumerate(value)})
    if isinstance(value, dict):
        return {k: sort_object(value[k]) for k in sorted(value, key=_utf16_order)}
    return value


def js_stringify(value: JsonValue) -> str:
    """`JSON.stringify(value)` without indentation, numbers as JavaScript doubles print."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return js_quote(value)
    if isinstance(value, JsonNumber):
        double = value.to_double()
        # JSON.stringify writes non-finite numbers (1e400 parses to Infinity) as null.
        return js_number_to_string(double) if math.isfinite(double) else "null"
    if isinstance(value, list):
        return "[" + ",".join(js_stringify(item) for item in value) + "]"
    keys = _property_order(list(value))
    return "{" + ",".join(f"{js_quote(k)}:{js_stringify(value[k])}" for k in keys) + "}"


def js_canonical(value: JsonValue) -> str:
    """`JSON.stringify(sortObject(value))` as NOWPayments' Node.js code computes it."""
    return js_stringify(sort_object(value))


def with_javascript_numbers(body: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """The body with every number as JavaScript reads and writes it: what the signature covers.

    The signature covers the parsed numbers, not their text: `5077125051`, `5077125051.0` and
    `50771250510e-1` sign alike, and so do `0.1` and `0.1000000000000000055511151231257827`. Each
    number therefore means the double JavaScript makes of it, written as JavaScript writes it; a
    respelled replay is the same payment id and the same amount, so it is a duplicate, never a new
    payment. A number JavaScript reads as infinite is null, as `JSON.stringify` writes it.
    """
    return {key: _javascript_number(value) for key, value in body.items()}


def _javascript_number(value: JsonValue) -> JsonValue:
    if isinstance(value, JsonNumber):
        double = value.to_double()
        return JsonNumber(js_number_to_string(double)) if math.isfinite(double) else None
    if isinstance(value, list):
        return [_javascript_number(item) for item in value]
    if isinstance(value, dict):
        return with_javascript_numbers(value)
    return value
