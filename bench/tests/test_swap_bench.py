"""The swap bench on a tiny input: every swap completes, every figure is measured, and the
correctness check it runs catches a system (or a model) that is off by one unit of a coin."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from bench.suite import WrongAnswer, check
from bench.swap import FEES, LIQUIDITY, contract_quote, run_swaps, wrong_against
from shared.infra import Infrastructure

WEI = Decimal("1e-18")


def test_the_quote_model_follows_the_contract_rounding() -> None:
    model = contract_quote()
    # 0.001 BTC × 0.001 = 0.000001, already on the satoshi; the rate is 52000 / 2800 × 0.995.
    assert model.fee == Decimal("0.00000100")
    assert model.rate == Decimal("18.478571428571428571")  # 18.4785714285714285714…, down
    assert model.to_amount == Decimal("0.018460092857142857")  # 0.0184600928571428571424…, down
    # A fee rate that lands between satoshis rounds up.
    assert contract_quote(Decimal("0.0015")).fee == Decimal("0.00000150")
    assert contract_quote(Decimal("0.0015001")).fee == Decimal("0.00000151")


async def test_the_swap_bench_on_a_tiny_input(infrastructure: Infrastructure) -> None:
    run = await run_swaps(infrastructure, swaps=5, concurrency=2)
    figures = run.figures()
    assert figures["outcomes"] == {"completed": 5}
    assert run.wrong == []
    assert len(run.found.quotes) == 5
    assert sum(run.found.per_user.values()) == 5
    assert len(run.to_completed_ms) == 5
    assert all(
        figures[name] is not None and figures[name] > 0
        for name in ("swaps_per_s", "quote_p50_ms", "execute_p99_ms", "execute_to_completed_p99_ms")
    )
    # Completion includes the execute's answer: it can never be the shorter of the two.
    assert min(c - e for c, e in zip(run.to_completed_ms, run.execute_ms, strict=True)) >= 0

    # A model whose fee is rounded another way disagrees with every quote and with platform:fees.
    wrong = wrong_against(contract_quote(Decimal("0.0011")), run.found)
    assert sum(w.startswith("quote ") for w in wrong) == 5
    assert any(w.startswith(f"{FEES} BTC") for w in wrong)
    with pytest.raises(WrongAnswer):
        check("swap", wrong)

    # A swapper one wei short, liquidity one wei off, a swap that failed: each is caught.
    model = contract_quote()
    user = next(iter(run.found.per_user))
    short = copy.deepcopy(run.found)
    available, locked = short.balances[(user, "ETH")]
    short.balances[(user, "ETH")] = (available - WEI, locked)
    assert [w.split(": ")[0] for w in wrong_against(model, short)] == [f"{user} ETH"]
    drained = copy.deepcopy(run.found)
    drained.platform[(LIQUIDITY, "ETH")] -= WEI
    assert [w.split(": ")[0] for w in wrong_against(model, drained)] == [f"{LIQUIDITY} ETH"]
    failed = copy.deepcopy(run.found)
    failed.ends[0] = "failed"
    assert wrong_against(model, failed) == ["a swap ended failed"]
