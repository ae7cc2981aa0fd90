"""Portfolio arithmetic: values from one snapshot, unrounded sums, percentages that sum to 100.00."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.domain.portfolio import (
    Holding,
    display_value,
    largest_remainder_percentages,
    value_portfolio,
)

D = Decimal


def held(currency: str, available: str, locked: str = "0", savings: str = "0") -> Holding:
    return Holding(currency, D(available), D(locked), D(savings))


def percentages(portfolio_part: object) -> list[str]:
    return [f"{item.percentage}" for item in portfolio_part]  # type: ignore[attr-defined]


def test_one_asset_is_the_whole_portfolio() -> None:
    portfolio = value_portfolio([held("BTC", "0.5", "0.25")], {"BTC": D("52012.34")}, "GBP")
    (asset,) = portfolio.assets
    assert (asset.value, asset.percentage) == (D("39009.2550"), D("100.00"))
    assert portfolio.total_value == D("39009.2550")
    assert display_value(portfolio.total_value, 2) == D("39009.26")  # half-up, for display only
    assert [(s.label, s.percentage) for s in portfolio.allocation] == [("BTC", D("100.00"))]
    assert portfolio.unpriced == ()


def test_holding_includes_locked_and_savings() -> None:
    portfolio = value_portfolio([held("ETH", "1", "2", "3")], {"ETH": D("2000")}, "GBP")
    assert portfolio.assets[0].value == D("12000")


def test_savings_only() -> None:
    portfolio = value_portfolio([held("USDT", "0", savings="250.5")], {"USDT": D("0.79")}, "GBP")
    assert portfolio.total_value == D("197.895")
    assert percentages(portfolio.assets) == ["100.00"]
    assert [s.label for s in portfolio.allocation] == ["USDT"]


def test_seven_assets_with_ties_give_top_five_and_others() -> None:
    # Seven equal values: 14.2857…% each; the four hundredths the cut lost go to the earliest.
    codes = ["BTC", "ETH", "LTC", "SOL", "TRX", "USDC", "USDT"]
    portfolio = value_portfolio(
        [held(c, "1") for c in reversed(codes)], dict.fromkeys(codes, D("3")), "GBP"
    )
    assert [a.currency for a in portfolio.assets] == codes
    assert percentages(portfolio.assets) == ["14.29"] * 4 + ["14.28"] * 3
    assert sum(a.percentage or 0 for a in portfolio.assets) == D("100.00")
    allocation = [(s.label, s.value, f"{s.percentage}") for s in portfolio.allocation]
    assert allocation == [
        *((c, D(3), "14.29") for c in codes[:3]),
        ("SOL", D(3), "14.28"),
        ("TRX", D(3), "14.28"),
        ("Others", D(6), "28.57"),
    ]
    assert sum(s.percentage for s in portfolio.allocation) == D("100.00")


def test_exactly_five_valued_assets_have_no_others() -> None:
    codes = ["BTC", "ETH", "LTC", "SOL", "TRX"]
    portfolio = value_portfolio(
        [*(held(c, "1") for c in codes), held("USDT", "0")],
        dict.fromkeys([*codes, "USDT"], D("1")),
        "GBP",
    )
    assert [s.label for s in portfolio.allocation] == codes


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # Rounded half-up: 33.33 × 3 = 99.99. Largest remainder gives the hundredth to the first.
        (["1", "1", "1"], ["33.34", "33.33", "33.33"]),
        # Rounded half-up: 16.67 × 6 = 100.02; 1/6 and 5/6: 16.67 + 83.33 = 100.00 by luck only.
        (["1"] * 6, ["16.67", "16.67", "16.67", "16.67", "16.66", "16.66"]),
        # Dust: 0.005 % rounds up to 0.01 in each of two places, naive sum 100.01.
        (["0.00005", "0.00005", "0.9999"], ["0.01", "0.00", "99.99"]),
    ],
)
def test_dust_whose_naive_rounding_misses_100(values: list[str], expected: list[str]) -> None:
    shares = largest_remainder_percentages([D(v) for v in values])
    assert [f"{s}" for s in shares] == expected
    assert sum(shares) == D("100.00")


def test_naive_rounding_really_misses_in_those_cases() -> None:
    def naive(values: list[str]) -> Decimal:
        total = sum(D(v) for v in values)
        return sum(
            (D(v) / total * 100).quantize(D("0.01"), rounding="ROUND_HALF_UP") for v in values
        )

    assert naive(["1", "1", "1"]) == D("99.99")
    assert naive(["0.00005", "0.00005", "0.9999"]) == D("100.01")


def test_no_prices_at_all_lists_everything_as_unpriced() -> None:
    portfolio = value_portfolio([held("BTC", "1"), held("ETH", "2")], {}, "GBP")
    assert portfolio.unpriced == ("BTC", "ETH")
    assert [(a.price, a.value, a.percentage) for a in portfolio.assets] == [(None, None, None)] * 2
    assert (portfolio.total_value, portfolio.allocation) == (D(0), ())


def test_unpriced_assets_are_left_out_of_total_and_percentages() -> None:
    portfolio = value_portfolio(
        [held("BTC", "1"), held("EUR", "100"), held("GBP", "50")], {"BTC": D("150")}, "GBP"
    )
    assert portfolio.total_value == D("200")
    assert [(a.currency, a.price, a.percentage) for a in portfolio.assets] == [
        ("BTC", D("150"), D("75.00")),
        ("GBP", D("1"), D("25.00")),  # the valuation currency is worth 1 of itself
        ("EUR", None, None),
    ]
    assert portfolio.unpriced == ("EUR",)


def test_nothing_of_value_gives_zero_percentages_and_no_allocation() -> None:
    portfolio = value_portfolio([held("BTC", "0")], {"BTC": D("50000")}, "GBP")
    assert percentages(portfolio.assets) == ["0.00"]
    assert portfolio.allocation == ()


def test_values_are_exact_for_the_largest_holdings() -> None:
    portfolio = value_portfolio(
        [held("ETH", "999999999999999.999999999999999999")], {"ETH": D("1234.5678")}, "GBP"
    )
    # Python's default 28-digit context would have rounded this product.
    assert portfolio.total_value == D("1234567799999999999.9999999999999987654322")


@given(
    st.lists(
        st.decimals(min_value=0, max_value=10**12, places=8, allow_nan=False),
        min_size=1,
        max_size=12,
    )
)
def test_percentages_always_sum_to_100_or_are_all_zero(values: list[Decimal]) -> None:
    shares = largest_remainder_percentages(values)
    assert all(s.as_tuple().exponent == -2 and s >= 0 for s in shares)
    assert sum(shares) == (D("100.00") if sum(values) > 0 else D(0))
    # No share moves more than one hundredth from its exact value.
    if sum(values) > 0:
        total = sum(values)
        assert all(
            abs(s - v * 100 / total) < D("0.01") for s, v in zip(shares, values, strict=True)
        )
