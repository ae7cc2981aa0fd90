"""The faster `parse_amount` answers exactly what it answered before, for any input."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from shared.money import (
    CURRENCIES,
    LEDGER_CONTEXT,
    Currency,
    MoneyError,
    check_scale,
    get_currency,
    max_integer_digits,
    parse_amount,
    parse_decimal,
)


def parse_amount_as_before(
    raw: object, currency: Currency | str, *, allow_zero: bool = False
) -> Decimal:
    """parse_amount as it was written before it compared the quantized value."""
    cur = currency if isinstance(currency, Currency) else get_currency(currency)
    value = parse_decimal(raw)
    if value < 0 or (value == 0 and not allow_zero) or value.is_signed():
        raise MoneyError(
            "amount_not_positive",
            "amount must be greater than zero" if not allow_zero else "amount must not be negative",
        )
    check_scale(value, cur)
    if value != 0 and value.adjusted() >= max_integer_digits(cur):
        raise MoneyError(
            "amount_too_large", f"{cur.code} amounts must be below 10^{max_integer_digits(cur)}"
        )
    return value.quantize(Decimal(1).scaleb(-cur.scale), context=LEDGER_CONTEXT)


def answer(parse: Any, raw: object, currency: Any, allow_zero: bool) -> tuple[object, ...]:
    try:
        value = parse(raw, currency, allow_zero=allow_zero)
    except MoneyError as error:
        return ("refused", error.code, error.message)
    except Exception as error:  # e.g. decimal.Inexact: the same failure, of the same kind
        return ("failed", type(error))
    # The text shows the exponent too: 1.50 and 1.5 are equal but not the same Decimal.
    return ("parsed", str(value), value.as_tuple())


digits = st.text(alphabet="0123456789", min_size=1, max_size=40)
# Decimal strings of every shape: signs, points, exponents, whitespace, up to and past the 64
# characters allowed, more digits than the ledger's 60-digit context, special values, garbage.
amount_texts = st.one_of(
    st.builds(
        lambda sign, whole, point, fraction, exponent, pad: (
            f"{pad}{sign}{whole}{point}{fraction}{exponent}{pad}"
        ),
        st.sampled_from(["", "-", "+"]),
        digits,
        st.sampled_from(["", "."]),
        st.one_of(st.just(""), digits),
        st.one_of(st.just(""), st.integers(-30, 30).map(lambda e: f"E{e:+d}")),
        st.sampled_from(["", " ", "\t"]),
    ),
    st.builds(
        lambda n, tail: "1." + "0" * n + tail, st.integers(0, 70), st.sampled_from(["", "1"])
    ),
    st.sampled_from(["NaN", "sNaN", "-Infinity", "inf", "", ".", "1e", "0x10", "１"]),
    st.text(max_size=8),
)
any_decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(
        lambda sign, ds, exponent: Decimal((sign, ds, exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=70).map(tuple),
        st.integers(-40, 30),
    ),
)
raws = st.one_of(amount_texts, any_decimals, st.integers(), st.floats(), st.booleans(), st.none())
currencies = st.one_of(
    st.sampled_from(sorted(CURRENCIES)),
    st.sampled_from(sorted(CURRENCIES)).map(lambda code: CURRENCIES[code]),
    st.sampled_from(["btc", "usdttrc20", "XYZ", ""]),
)


@given(raws, currencies, st.booleans())
@example("1." + "0" * 61 + "1", "BTC", False)  # 63 digits: normalising cannot hold them
@example("0.000000001", "BTC", False)
@example("0.00000000100", "BTC", False)
@example("-0", "BTC", True)
@example("0E+50", "ETH", True)
@example("999999999999999999", "GBP", False)
@example("99999999999999999.99", "GBP", False)
@example(Decimal("1.5E-19"), "ETH", False)
def test_any_amount_is_answered_as_before(raw: object, currency: Any, allow_zero: bool) -> None:
    assert answer(parse_amount, raw, currency, allow_zero) == answer(
        parse_amount_as_before, raw, currency, allow_zero
    )


def test_the_quantum_is_the_scale_built_once() -> None:
    for currency in CURRENCIES.values():
        assert currency.quantum == Decimal(1).scaleb(-currency.scale)
        assert str(currency.quantum) == str(Decimal(1).scaleb(-currency.scale))
        assert currency.quantum is currency.quantum
