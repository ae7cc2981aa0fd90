"""The faster `format_amount` answers exactly what the normalising one did, for any input."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from shared.money import LEDGER_CONTEXT, format_amount


def format_amount_as_before(value: Decimal) -> str:
    """format_amount as it was written before its fast path."""
    if value == 0:
        return "0"
    return format(value.normalize(LEDGER_CONTEXT), "f")


def answer(function: Any, value: Any) -> tuple[str, object]:
    try:
        return ("text", function(value))
    except Exception as error:  # the same refusal, of the same kind, is the same answer
        return ("refused", type(error))


# Every kind of Decimal: NaN and sNaN of both signs, infinities, negative zero, any exponent, and
# digit strings longer than the ledger's 60-digit context (where normalising refuses to round).
any_decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(
        lambda sign, digits, exponent: Decimal((sign, digits, exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=80).map(tuple),
        st.integers(-90, 90),
    ),
    # Amounts as the ledger holds them: quantized to a currency's scale (trailing zeros).
    st.builds(
        lambda units, places: Decimal(f"{units}E-{places}"),
        st.integers(-(10**30), 10**30),
        st.integers(0, 18),
    ),
)


@given(any_decimals)
@example(Decimal("-0.000"))
@example(Decimal("0E-8"))
@example(Decimal("100.00000000"))
@example(Decimal("-1.50"))
@example(Decimal("1E+2"))
@example(Decimal("1E-7"))
@example(Decimal("0.0000001"))
@example(Decimal("1" * 58 + ".0"))
@example(Decimal("1" * 59 + ".0"))
@example(Decimal("1" * 61 + ".0"))
@example(Decimal("sNaN"))
@example(Decimal("-NaN123"))
def test_any_decimal_formats_as_before(value: Decimal) -> None:
    assert answer(format_amount, value) == answer(format_amount_as_before, value)


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=5), st.none()))
def test_anything_else_is_answered_as_before(value: Any) -> None:
    assert answer(format_amount, value) == answer(format_amount_as_before, value)
