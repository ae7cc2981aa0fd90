"""The P2P bench on a tiny input: every trade completes, every figure is measured, and the
correctness check it runs catches a system (or a model) that is off by one satoshi."""

from __future__ import annotations

import copy
from decimal import ROUND_DOWN, Decimal

import pytest

from bench.p2p import (
    CURRENCY,
    Pair,
    contract_fee,
    expected,
    run_p2p,
    trade_amount,
    wrong_against,
)
from bench.suite import WrongAnswer, check
from shared.infra import Infrastructure

SATOSHI = Decimal("0.00000001")


def test_the_fee_is_rounded_up_to_the_coin_and_the_model_conserves_money() -> None:
    assert contract_fee(Decimal("0.01")) == Decimal("0.00001")
    assert trade_amount(1) == Decimal("0.01000137")
    assert contract_fee(trade_amount(1)) == Decimal("0.00001001")  # 0.00001000137, up
    pairs = [Pair("s0", "b0", 3), Pair("s1", "b1", 2)]
    model = expected(pairs)
    funded = sum(pair.funding for pair in pairs)
    held = sum(available + locked for available, locked in model.balances.values())
    assert held + model.fees == funded
    assert model.balances[("b0", CURRENCY)] == (sum(map(trade_amount, range(3))), Decimal(0))
    assert model.completed_per_buyer == {"b0": 3, "b1": 2}


async def test_the_p2p_bench_on_a_tiny_input(infrastructure: Infrastructure) -> None:
    run = await run_p2p(infrastructure, trades=5, concurrency=2)
    assert run.wrong == []
    check("p2p", run.wrong)
    figures = run.figures()
    assert figures["outcomes"] == {"completed": 5}
    assert sum(len(trades) for trades in run.found.trades.values()) == 5
    assert run.found.fees == sum(contract_fee(a) for pair in run.pairs for a in pair.amounts)
    assert all(
        figures[name] is not None and figures[name] > 0
        for name in (
            "trades_per_s",
            "create_p50_ms",
            "create_to_escrowed_p99_ms",
            "release_p99_ms",
            "release_to_completed_p99_ms",
        )
    )
    # Each span includes the answer it starts with: it can never be the shorter of the two.
    assert min(e - c for e, c in zip(run.to_escrowed_ms, run.create_ms, strict=True)) >= 0
    assert min(d - r for d, r in zip(run.to_completed_ms, run.release_ms, strict=True)) >= 0

    # A model with the fee rounded down (not the contract's rule) disagrees with what ran.
    def rounded_down(amount: Decimal) -> Decimal:
        return (amount * Decimal("0.001")).quantize(SATOSHI, rounding=ROUND_DOWN)

    wrong = wrong_against(expected(run.pairs, rounded_down), run.found)
    assert any("platform:fees" in w for w in wrong)
    assert any("fee " in w for w in wrong)
    with pytest.raises(WrongAnswer):
        check("p2p", wrong)

    # A seller left with one satoshi locked, a trade listed twice: each is caught.
    seller = (run.pairs[0].seller, CURRENCY)
    locked_left = copy.deepcopy(run.found)
    available, locked = locked_left.balances[seller]
    locked_left.balances[seller] = (available, locked + SATOSHI)
    [wrong_balance] = wrong_against(expected(run.pairs), locked_left)
    assert wrong_balance.startswith(str(seller))
    twice = copy.deepcopy(run.found)
    buyer = run.pairs[1].buyer
    twice.trades[buyer].append(twice.trades[buyer][0])
    assert len(wrong_against(expected(run.pairs), twice)) == 1
