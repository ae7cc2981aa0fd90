"""Amount parsing refuses every bad form with its own code and never rounds."""

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging import InvalidCommand, parse_command
from shared.money import (
    CURRENCIES,
    MoneyError,
    format_amount,
    get_currency,
    parse_amount,
)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("NaN", "amount_not_a_number"),
        ("nan", "amount_not_a_number"),
        ("sNaN", "amount_not_a_number"),
        ("-NaN", "amount_not_a_number"),
        ("Infinity", "amount_infinite"),
        ("-inf", "amount_infinite"),
        ("1E+9999", "amount_too_large"),
        ("1e400", "amount_too_large"),
        ("1" * 19, "amount_too_large"),
        ("9" * 5000, "amount_too_long"),
        ("-1", "amount_not_positive"),
        ("0", "amount_not_positive"),
        ("-0", "amount_not_positive"),
        ("0.000", "amount_not_positive"),
        ("0.000000001", "amount_too_precise"),
        ("1e-9", "amount_too_precise"),
        ("", "amount_malformed"),
        ("1,5", "amount_malformed"),
        ("0x10", "amount_malformed"),
        ("1.2.3", "amount_malformed"),
        (" ", "amount_malformed"),
        ("1_000", "amount_malformed"),
        ("١٢", "amount_malformed"),  # non-ASCII digits Decimal() would accept
        (0.01, "amount_not_a_string"),
        (1, "amount_not_a_string"),
        (True, "amount_not_a_string"),
        (None, "amount_malformed"),
        (["1"], "amount_malformed"),
        # 64 characters, more significant digits than the ledger's precision: refused, never a
        # decimal.Inexact escaping (which made a command that carried it fail its whole batch).
        ("1." + "0" * 61 + "1", "amount_too_precise"),
        ("0." + "1" * 62, "amount_too_precise"),
        ("1" * 20 + "." + "0" * 42 + "1", "amount_too_large"),
    ],
)
def test_bad_amounts_are_refused_with_their_code(raw: object, code: str) -> None:
    with pytest.raises(MoneyError) as refused:
        parse_amount(raw, "BTC")
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("raw", "currency", "expected"),
    [
        ("0.01", "BTC", Decimal("0.01")),
        ("0.00000001", "BTC", Decimal("0.00000001")),
        ("1.50", "GBP", Decimal("1.5")),
        ("1.500000000", "GBP", Decimal("1.5")),  # trailing zeros carry no precision
        ("1e3", "USD", Decimal("1000")),
        (
            "123456789012345.123456789012345678",
            "ETH",
            Decimal("123456789012345.123456789012345678"),
        ),
        ("30.123456", "usdttrc20", Decimal("30.123456")),
    ],
)
def test_good_amounts_parse_exactly(raw: str, currency: str, expected: Decimal) -> None:
    value = parse_amount(raw, currency)
    assert value == expected
    assert value.as_tuple().exponent == -get_currency(currency).scale


def test_zero_is_allowed_only_when_asked() -> None:
    assert parse_amount("0", "BTC", allow_zero=True) == 0
    with pytest.raises(MoneyError, match="negative"):
        parse_amount("-0", "BTC", allow_zero=True)


def test_eth_amounts_keep_all_eighteen_decimals_without_rounding() -> None:
    # Python's default context would round this at 28 digits.
    assert format_amount(parse_amount("999999999999999.999999999999999999", "ETH")) == (
        "999999999999999.999999999999999999"
    )
    with pytest.raises(MoneyError) as refused:
        parse_amount("1000000000000000", "ETH")  # 10^15: beyond what Decimal128 keeps exact
    assert refused.value.code == "amount_too_large"


def test_each_currency_scale_is_enforced() -> None:
    for code, currency in CURRENCIES.items():
        smallest = format_amount(currency.quantum)
        assert parse_amount(smallest, code) == currency.quantum
        with pytest.raises(MoneyError) as refused:
            parse_amount(format_amount(currency.quantum / 10), code)
        assert refused.value.code == "amount_too_precise"


@pytest.mark.parametrize(
    ("code", "expected"),
    [("btc", "BTC"), ("BTC", "BTC"), ("usdttrc20", "USDT"), ("usdcerc20", "USDC"), ("gbp", "GBP")],
)
def test_currency_codes_and_nowpayments_tickers(code: str, expected: str) -> None:
    assert get_currency(code).code == expected


@pytest.mark.parametrize("code", ["XYZ", "", None, 5, "b" * 100])
def test_unknown_currencies_are_refused(code: object) -> None:
    with pytest.raises(MoneyError) as refused:
        get_currency(code)
    assert refused.value.code == "unknown_currency"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0"), "0"),
        (Decimal("0E-8"), "0"),
        (Decimal("1.51000000"), "1.51"),
        (Decimal("100"), "100"),
        (Decimal("1E+2"), "100"),
        (Decimal("0.00000001"), "0.00000001"),
    ],
)
def test_format_amount_is_plain_notation(value: Decimal, text: str) -> None:
    assert format_amount(value) == text


@given(
    st.from_regex(r"\A-?[0-9]{1,40}(\.[0-9]{1,62})?\Z", fullmatch=True).filter(
        lambda text: len(text) <= 64
    ),
    st.sampled_from(["BTC", "ETH", "GBP", "USDT"]),
)
def test_any_decimal_text_within_the_length_limit_is_parsed_or_refused_with_a_code(
    text: str, currency: str
) -> None:
    """Never another exception: one escaping the parser fails the batch of the command."""
    refused: MoneyError | None = None
    try:
        value = parse_amount(text, currency)
    except MoneyError as error:
        refused = error
    if refused is None:
        assert value == Decimal(text)
    else:
        assert refused.code in {"amount_not_positive", "amount_too_precise", "amount_too_large"}


def test_a_command_with_an_amount_too_precise_to_normalise_is_refused_not_raised() -> None:
    raw = json.dumps(
        {
            "command_id": "c-long",
            "type": "credit",
            "transaction_type": "deposit_nowpayments",
            "reference_id": "r-long",
            "user_id": "alice",
            "currency": "BTC",
            "amount": "1." + "0" * 61 + "1",
        }
    ).encode()
    with pytest.raises(InvalidCommand) as refused:
        parse_command(raw)
    assert refused.value.reason == "invalid_amount"
