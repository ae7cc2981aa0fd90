"""Why an execution is refused, and what a wallet result makes of a conversion."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.money import get_currency
from trading.conversions.domain import (
    ConversionKind,
    Quote,
    Status,
    Terms,
    make_quote,
    outcome_of,
    refusal_to_execute,
)
from trading.errors import Conflict, NotFound
from trading.prices.domain import Price

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


@pytest.fixture
def swap_quote() -> Quote:
    return make_quote(
        quote_id="q1",
        kind=ConversionKind.SWAP,
        user_id="amy",
        pay=get_currency("BTC"),
        pay_amount=Decimal("0.01"),
        receive=get_currency("ETH"),
        pay_price=Price("BTC", Decimal("52000"), NOW, "test"),
        receive_price=Price("ETH", Decimal("2800"), NOW, "test"),
        terms=Terms(Decimal("0.001"), Decimal("0.005"), timedelta(seconds=10)),
        now=NOW,
    )


def test_someone_elses_or_a_missing_or_another_kinds_quote_is_not_found(swap_quote: Quote) -> None:
    for quote, kind, user in (
        (None, ConversionKind.SWAP, "amy"),
        (swap_quote, ConversionKind.SWAP, "bob"),
        (swap_quote, ConversionKind.EXPRESS_BUY, "amy"),
    ):
        refusal = refusal_to_execute(quote, kind, user, NOW)
        assert isinstance(refusal, NotFound)
        assert refusal.code == "quote_not_found"


def test_a_used_quote_is_used_even_after_it_expired(swap_quote: Quote) -> None:
    used = swap_quote.executed("x1", NOW)
    later = NOW + timedelta(seconds=60)
    refusal = refusal_to_execute(used, ConversionKind.SWAP, "amy", later)
    assert isinstance(refusal, Conflict)
    assert refusal.code == "quote_used"


def test_a_quote_expires_at_its_ttl_exactly(swap_quote: Quote) -> None:
    assert not swap_quote.expired(NOW + timedelta(seconds=9.999))
    assert swap_quote.expired(NOW + timedelta(seconds=10))
    refusal = refusal_to_execute(swap_quote, ConversionKind.SWAP, "amy", swap_quote.expires_at)
    assert isinstance(refusal, Conflict)
    assert refusal.code == "quote_expired"


def test_the_wallet_reference_is_the_kind_and_the_execution(swap_quote: Quote) -> None:
    with pytest.raises(ValueError, match="not executed"):
        _ = swap_quote.wallet_reference
    assert swap_quote.executed("x1", NOW).wallet_reference == "swap:x1"
    assert replace(swap_quote, kind=ConversionKind.EXPRESS_BUY).executed(
        "x2", NOW
    ).wallet_reference == ("express_buy:x2")


@pytest.mark.parametrize(
    ("status", "original", "reason", "expected"),
    [
        ("applied", None, None, (Status.COMPLETED, None)),
        ("rejected", None, "insufficient_liquidity", (Status.FAILED, "insufficient_liquidity")),
        ("duplicate", "applied", None, (Status.COMPLETED, None)),
        ("duplicate", "rejected", "insufficient_funds", (Status.FAILED, "insufficient_funds")),
        ("duplicate", None, None, (Status.PENDING, None)),
    ],
)
def test_a_wallet_result_decides_the_outcome(
    status: str, original: str | None, reason: str | None, expected: tuple[Status, str | None]
) -> None:
    assert outcome_of(status, original, reason) == expected
