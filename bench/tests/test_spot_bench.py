"""The spot end-to-end bench on a tiny input: every order fills as the contract says, and the check
it runs catches a system (or a model) that is off by one unit of a currency."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from bench.matcher import run_spot_end_to_end
from bench.spot import FEES, spot_model, wrong_against
from bench.suite import WrongAnswer, check
from shared.infra import Infrastructure

SATOSHI = Decimal("0.00000001")
PENNY = Decimal("0.01")


def test_the_trade_model_follows_the_contract_rounding() -> None:
    model = spot_model()
    assert model.quote == Decimal("61.5000000")  # 0.00123 BTC × 50,000.00 GBP
    assert model.maker_fee == Decimal("0.07")  # 61.50 × 0.001 = 0.0615, up to the penny
    assert model.taker_fee == Decimal("0.00000246")  # 0.00123 × 0.002, already on the satoshi
    # A taker fee rate that lands between satoshis rounds up, too.
    assert spot_model(taker_rate=Decimal("0.0015")).taker_fee == Decimal("0.00000185")


async def test_the_spot_bench_on_a_tiny_input(infrastructure: Infrastructure) -> None:
    run = await run_spot_end_to_end(
        infrastructure.kafka_bootstrap_servers, infrastructure.mongodb_url, takers=5
    )
    assert run.wrong == []
    assert len(run.found.takers) == len(run.found.makers) == 5
    assert len(run.latencies_ms) == 5
    assert run.per_s > 0
    model = spot_model()
    assert run.found.platform[(FEES, "GBP")] == 5 * model.maker_fee
    assert run.found.platform[(FEES, "BTC")] == 5 * model.taker_fee

    # A model whose maker fee is rounded down disagrees with every maker and with platform:fees.
    wrong = wrong_against(spot_model(maker_rate=Decimal("0.0009")), run.found)
    assert sum(w.startswith("order ") for w in wrong) == 5
    assert any(w.startswith(f"{FEES} GBP") for w in wrong)
    with pytest.raises(WrongAnswer):
        check("spot", wrong)

    # A buyer a satoshi short, a seller with a penny left locked, fees a penny off, a trade settled
    # twice, an order left open: each is caught, and nothing else is reported.
    short = copy.deepcopy(run.found)
    available, locked = short.balances[("buyer0", "BTC")]
    short.balances[("buyer0", "BTC")] = (available - SATOSHI, locked)
    assert [w.split(": ")[0] for w in wrong_against(model, short)] == ["buyer0 BTC"]
    stuck = copy.deepcopy(run.found)
    available, locked = stuck.balances[("seller1", "GBP")]
    stuck.balances[("seller1", "GBP")] = (available - PENNY, locked + PENNY)
    assert [w.split(": ")[0] for w in wrong_against(model, stuck)] == ["seller1 GBP"]
    skimmed = copy.deepcopy(run.found)
    skimmed.platform[(FEES, "GBP")] += PENNY
    assert [w.split(": ")[0] for w in wrong_against(model, skimmed)] == [f"{FEES} GBP"]
    # A trade the wallet settled in a second ledger transaction (a fill decided twice).
    twice = copy.deepcopy(run.found)
    trade_id = twice.takers[0]["fills"][0]["trade_id"]
    twice.settled[trade_id].add("another-ledger-transaction")
    assert [w.split(":")[0] for w in wrong_against(model, twice)] == [f"trade {trade_id}"]
    open_order = copy.deepcopy(run.found)
    open_order.makers[2]["status"] = "partially_filled"
    assert [w.split(":")[0] for w in wrong_against(model, open_order)] == [
        f"order {open_order.makers[2]['order_id']}"
    ]
