"""verify names each hold's amount exactly: a 33-digit ETH hold is not rounded to 28 digits."""

from decimal import Decimal

from wallet.application.reconciliation import _holds_text


def test_a_33_digit_hold_is_written_in_full() -> None:
    holds = (("order-1", Decimal("123456789012345.123456789012345678")), ("t2", Decimal("0.50")))
    assert _holds_text(holds) == "order-1=123456789012345.123456789012345678, t2=0.5"
