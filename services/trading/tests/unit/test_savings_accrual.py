"""Interest amounts, accrual keys and the balance a day pays on."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging import LedgerTransaction, Posting
from shared.money import get_currency
from trading.savings.domain.accrual import (
    accrual_cutoff,
    accrual_reference,
    accruals_due,
    balances_at,
    daily_interest,
    days_due,
    days_to_catch_up,
    end_of_day,
    last_day_due,
    next_run_at,
    parse_accrual_date,
    savings_movements,
)
from trading.savings.domain.errors import SavingsRefused

USDT, ETH, BTC, GBP = (get_currency(c) for c in ("USDT", "ETH", "BTC", "GBP"))


def test_interest_is_the_daily_share_of_the_apr_rounded_down() -> None:
    # 1000 × 0.05 / 365 = 0.136986301369... → 0.136986 USDT (6 decimals, down)
    assert daily_interest(Decimal("1000"), Decimal("0.05"), USDT) == Decimal("0.136986")


def test_dust_below_one_unit_earns_nothing() -> None:
    # 0.000007 × 0.05 / 365 is far below 0.000001: nothing is paid, nothing is minted.
    assert daily_interest(Decimal("0.000007"), Decimal("0.05"), USDT) == 0
    # The smallest balance that earns one unit in a day: 0.000001 × 365 / 0.05 = 0.0073 USDT.
    assert daily_interest(Decimal("0.007299"), Decimal("0.05"), USDT) == 0
    assert daily_interest(Decimal("0.0073"), Decimal("0.05"), USDT) == Decimal("0.000001")


def test_eth_interest_keeps_eighteen_decimals() -> None:
    balance = Decimal("1.234567890123456789")
    amount = daily_interest(balance, Decimal("0.04"), ETH)
    # 1.234567890123456789 × 0.04 / 365 = 0.000135295111246406|2... (floored at 18 places)
    exact = Fraction(balance) * Fraction("0.04") / 365
    assert amount == Decimal(int(exact * 10**18)).scaleb(-18)
    assert amount == Decimal("0.000135295111246406")
    assert amount.as_tuple().exponent == -18


def test_a_leap_year_still_divides_by_365() -> None:
    # The contract fixes ÷365: 29 February pays like any other day, so a leap year pays 366 days.
    leap_day = daily_interest(Decimal("36500"), Decimal("0.1"), GBP)
    assert leap_day == Decimal("10.00")
    assert 366 * leap_day == Decimal("3660.00")  # a leap year pays 366/365 of the APR
    assert end_of_day(date(2028, 2, 28)) == datetime(2028, 2, 29, tzinfo=UTC)
    assert end_of_day(date(2028, 2, 29)) == datetime(2028, 3, 1, tzinfo=UTC)


def test_an_exact_quantum_is_not_lost_to_rounding() -> None:
    # 365 × 0.01 / 365 = exactly 0.01: an inexact division could floor it to 0.00999999.
    assert daily_interest(Decimal("365"), Decimal("0.01"), GBP) == Decimal("0.01")
    assert daily_interest(Decimal("0.00000365"), Decimal("1"), BTC) == Decimal("0.00000001")


@given(
    units=st.integers(min_value=0, max_value=10**20),
    apr_bp=st.integers(min_value=0, max_value=10_000),
    code=st.sampled_from(["BTC", "ETH", "USDT", "GBP", "SOL"]),
)
def test_interest_is_the_largest_amount_not_above_the_exact_share(
    units: int, apr_bp: int, code: str
) -> None:
    currency = get_currency(code)
    balance = Decimal(units).scaleb(-currency.scale)
    apr = Decimal(apr_bp).scaleb(-4)
    amount = daily_interest(balance, apr, currency)
    exact = Fraction(balance) * Fraction(apr) / 365
    assert Fraction(amount) <= exact < Fraction(amount) + Fraction(1, 10**currency.scale)
    assert amount >= 0
    assert -amount.as_tuple().exponent <= currency.scale  # type: ignore[operator]


def test_nothing_is_paid_on_zero_or_negative_balance_or_rate() -> None:
    assert daily_interest(Decimal(0), Decimal("0.05"), USDT) == 0
    assert daily_interest(Decimal("-5"), Decimal("0.05"), USDT) == 0
    assert daily_interest(Decimal("100"), Decimal(0), USDT) == 0


def test_the_key_names_currency_day_and_user() -> None:
    assert accrual_reference("USDT", date(2026, 11, 29), "u1") == "interest:USDT:2026-11-29:u1"
    keys = {
        accrual_reference(c, d, u)
        for c in ("USDT", "BTC")
        for d in (date(2026, 11, 29), date(2026, 11, 30))
        for u in ("u1", "u2")
    }
    assert len(keys) == 8


def test_a_key_too_long_for_a_reference_names_the_user_by_its_hash() -> None:
    day = date(2026, 11, 29)
    longest_plain = "u" * (200 - len("interest:USDT:2026-11-29:"))
    assert (
        accrual_reference("USDT", day, longest_plain) == f"interest:USDT:2026-11-29:{longest_plain}"
    )
    long_id = longest_plain + "u"
    digest = hashlib.sha256(long_id.encode()).hexdigest()
    assert accrual_reference("USDT", day, long_id) == f"interest:sha256:USDT:2026-11-29:{digest}"
    # A user whose id looks like a hashed key still gets a plain key of their own.
    assert accrual_reference("USDT", day, f"sha256:{digest}") != accrual_reference(
        "USDT", day, long_id
    )


def test_accruals_due_skip_dust_and_are_keyed_per_user() -> None:
    due = accruals_due(
        "usdt",
        date(2026, 11, 29),
        Decimal("0.05"),
        {"b": Decimal("1000"), "a": Decimal("2000"), "dust": Decimal("0.007")},
    )
    assert [(d.user_id, d.amount, d.reference_id) for d in due] == [
        ("a", Decimal("0.273972"), "interest:USDT:2026-11-29:a"),
        ("b", Decimal("0.136986"), "interest:USDT:2026-11-29:b"),
    ]


def _transaction(
    tx_id: str, at: datetime, postings: list[tuple[str, str, str]], tx_type: str = "savings_deposit"
) -> LedgerTransaction:
    return LedgerTransaction(
        transaction_id=tx_id,
        command_id=f"c-{tx_id}",
        type="savings_in",
        transaction_type=tx_type,
        reference_id=f"r-{tx_id}",
        user_id="u1",
        postings=[Posting(account=a, currency=c, amount=Decimal(v)) for a, c, v in postings],
        occurred_at=at,
    )


def test_movements_are_the_postings_on_savings_accounts() -> None:
    at = datetime(2026, 11, 29, 12, tzinfo=UTC)
    tx = _transaction(
        "t1",
        at,
        [
            ("user:u1:available", "USDT", "-100"),
            ("user:u1:savings", "USDT", "100"),
            ("user:u:x:savings", "USDT", "5"),  # user ids may contain colons
            ("external:legacy_migration", "USDT", "-5"),
        ],
    )
    moves = savings_movements(tx)
    assert [(m.user_id, m.currency, m.amount, m.occurred_at) for m in moves] == [
        ("u1", "USDT", Decimal("100"), at),
        ("u:x", "USDT", Decimal("5"), at),
    ]
    assert len({m.key for m in moves}) == 2
    assert savings_movements(_transaction("t2", at, [("user:u1:available", "USDT", "1")])) == []


def test_the_balance_of_a_day_is_what_the_ledger_held_at_its_end() -> None:
    day = date(2026, 11, 29)
    moves = [
        *savings_movements(
            _transaction(
                "in", datetime(2026, 11, 29, 10, tzinfo=UTC), [("user:u1:savings", "USDT", "100")]
            )
        ),
        *savings_movements(
            _transaction(
                "out",
                datetime(2026, 11, 29, 23, 59, 59, 999999, tzinfo=UTC),
                [("user:u1:savings", "USDT", "-40")],
            )
        ),
        # At 00:00 exactly it belongs to the next day.
        *savings_movements(
            _transaction("next", end_of_day(day), [("user:u1:savings", "USDT", "1000")])
        ),
    ]
    assert balances_at(moves, end_of_day(day)) == {"u1": Decimal("60")}
    assert balances_at(moves, end_of_day(day) + timedelta(microseconds=1)) == {
        "u1": Decimal("1060")
    }


def test_the_cutoff_is_the_end_of_a_past_day_or_now_for_today() -> None:
    now = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)
    assert accrual_cutoff(date(2026, 11, 29), now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert accrual_cutoff(date(2026, 11, 30), now) == now
    with pytest.raises(SavingsRefused) as refused:
        accrual_cutoff(date(2026, 12, 1), now)
    assert refused.value.code == "date_in_future"


@pytest.mark.parametrize(
    "raw",
    [
        "2026-13-01",
        "2026-02-30",
        "20261129",
        "yesterday",
        20261129,
        None,
        "",
        # ISO 8601 week dates, the one other form of ten characters a date parser reads:
        # 2026-W48-1 was taken for Monday 2026-11-23 and that day accrued.
        "2026-W48-1",
        "2026-W49-7",
    ],
)
def test_bad_dates_are_refused(raw: object) -> None:
    with pytest.raises(SavingsRefused) as refused:
        parse_accrual_date(raw)
    assert refused.value.code == "invalid_date"


def test_a_leap_day_is_a_date() -> None:
    assert parse_accrual_date("2028-02-29") == date(2028, 2, 29)


def test_catch_up_covers_the_lookback_oldest_first() -> None:
    assert days_to_catch_up(date(2026, 3, 2), 3) == [
        date(2026, 2, 27),
        date(2026, 2, 28),
        date(2026, 3, 1),
    ]
    assert days_to_catch_up(date(2026, 3, 2), 0) == []


def test_catch_up_goes_back_to_each_currencys_newest_completed_run() -> None:
    # Down for longer than the lookback: every day after the oldest of the newest runs.
    today = date(2026, 11, 13)
    assert days_to_catch_up(today, 7, [date(2026, 11, 2), date(2026, 11, 10)]) == [
        date(2026, 11, 3) + timedelta(days=n) for n in range(10)
    ]
    # A currency without a completed run has the lookback; runs within it change nothing.
    assert days_to_catch_up(today, 2, [None, date(2026, 11, 11)]) == [
        date(2026, 11, 11),
        date(2026, 11, 12),
    ]
    assert days_to_catch_up(today, 0, [date(2026, 11, 12), None]) == []
    assert days_to_catch_up(today, 0, [date(2026, 11, 13)]) == []  # an operator ran today's
    assert days_to_catch_up(date(2025, 1, 2), 0, [date(2024, 2, 27)]) == [
        date(2024, 2, 28) + timedelta(days=n) for n in range(309)
    ]


def test_a_day_is_due_once_its_midnight_plus_the_delay_has_come() -> None:
    delay = timedelta(seconds=5)
    assert last_day_due(datetime(2026, 12, 1, 0, 0, 4, tzinfo=UTC), delay) == date(2026, 11, 29)
    assert last_day_due(datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC), delay) == date(2026, 11, 30)
    late = datetime(2026, 12, 3, 2, tzinfo=UTC)  # a run that went on past two midnights
    assert days_due(date(2026, 11, 29), late, delay) == [
        date(2026, 11, 30),
        date(2026, 12, 1),
        date(2026, 12, 2),
    ]
    assert days_due(date(2026, 12, 2), late, delay) == []  # nothing twice
    assert days_due(date(2026, 12, 2), late - timedelta(days=1), delay) == []  # clock stepped back


def test_the_next_run_is_the_coming_midnight_plus_the_delay() -> None:
    delay = timedelta(seconds=5)
    assert next_run_at(datetime(2026, 11, 30, 15, tzinfo=UTC), delay) == datetime(
        2026, 12, 1, 0, 0, 5, tzinfo=UTC
    )
    assert next_run_at(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC), delay) == datetime(
        2026, 12, 1, 0, 0, 5, tzinfo=UTC
    )
    assert next_run_at(datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC), delay) == datetime(
        2026, 12, 2, 0, 0, 5, tzinfo=UTC
    )
