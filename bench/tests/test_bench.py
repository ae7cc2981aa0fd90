"""The benchmark code on a tiny input, so it cannot rot: shapes, keys and correctness, never speed."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from bench.__main__ import table
from bench.inprocess import modelled_per_s, run_ledger, run_seed
from bench.seed_wallet import memory_seed_wallet
from bench.stats import percentile, spread
from bench.suite import PARTS, SuiteConfig, WrongAnswer, check, run_parts
from bench.workload import build_workload
from shared.infra import Infrastructure
from shared.messaging import CreditCommand, DebitCommand, TransferCommand

TOP_KEYS = {
    "pipeline_commands_per_s",
    "echo_commands_per_s",
    "pipeline_efficiency",
    "pipeline_mongo_commands_per_s",
    "mongo_round_trips_per_command",
    "baseline_mongo_round_trips_per_command",
    "mongo_ledger_commands_per_s",
    "baseline_commands_per_s",
    "speedup_vs_baseline",
    "modelled_speedup_vs_baseline",
    "scale_commands_per_s",
    "ipn_answer_p99_ms",
    "ipn_to_balance_p99_ms",
    "p2p_trades_per_s",
    "reduced",
}


def test_the_mix_has_the_asked_shares_and_known_outcomes() -> None:
    workload = build_workload(10_000, users=100)
    share = {kind: count / len(workload) for kind, count in workload.kinds.items()}
    assert len(workload) == 10_000
    assert share["credit"] == pytest.approx(0.564, abs=0.02)  # 60 % of the fresh 94 %
    assert share["debit"] == pytest.approx(0.188, abs=0.02)
    assert share["lock"] == share["unlock"] == pytest.approx(0.047, abs=0.01)
    assert share["transfer"] == pytest.approx(0.094, abs=0.02)
    assert workload.expected == Counter(applied=9_400, duplicate=500, rejected=100)
    assert len({c["command_id"] for c in workload.commands}) == 10_000
    assert build_workload(10_000, users=100).commands == workload.commands  # deterministic


async def test_the_ledger_mix_adds_swaps_and_orders_that_all_apply() -> None:
    workload = build_workload(4_000, users=40, wave2=True)
    assert workload.kinds["exchange"] == workload.kinds["liquidity_funding"] > 100
    assert workload.kinds["order_lock"] > 50
    ledger = await run_ledger(workload.parsed(), 500)
    assert ledger.statuses == workload.expected
    assert workload.expected == Counter(applied=3_760, duplicate=200, rejected=40)
    assert ledger.round_trips == 3 * 8  # swaps read liquidity with the wallets: no extra trip


async def test_ledger_and_seed_agree_on_every_balance() -> None:
    commands = build_workload(3_000, users=30).parsed()
    ledger = await run_ledger(commands, 500)
    seed = await run_seed(commands)
    assert ledger.balances == seed.balances
    assert ledger.statuses == Counter(applied=2_820, duplicate=150, rejected=30)
    assert ledger.round_trips == 3 * 6  # keys, wallets, commit per batch
    # The seed records no rejection, so a resent over-debit is refused again, not a duplicate.
    assert seed.statuses["applied"] == 2_820
    assert seed.round_trips_per_command > 3
    assert modelled_per_s(0.001, 1, 0.001) == pytest.approx(500)


async def test_the_seed_service_moves_money_like_the_seed() -> None:
    seed, wallets, transactions = memory_seed_wallet()
    common = {"currency": "BTC", "user_id": "a"}
    credit = CreditCommand(
        **common, amount="1", transaction_type="deposit_nowpayments", reference_id="p"
    )
    assert (await seed.handle(credit)).status == "applied"
    assert (await seed.handle(credit)).status == "duplicate"
    too_much = DebitCommand(**common, amount="2", transaction_type="withdrawal", reference_id="w")
    assert (await seed.handle(too_much)).status == "rejected"
    pay = TransferCommand(
        **common, amount="0.4", transaction_type="p2p_payment", reference_id="t", to_user="b"
    )
    assert (await seed.handle(pay)).status == "applied"
    by_user = {d["user_id"]: d for d in wallets.all()}
    assert by_user["a"]["available_balance"] == Decimal("0.6")
    assert by_user["b"]["total_balance"] == Decimal("0.4")
    assert len(transactions.all()) == 3  # the credit, and both sides of the transfer
    # find + upsert + insert; find; find + guarded update; find + 2 updates + 2 inserts
    assert wallets.round_trips + transactions.round_trips == 3 + 1 + 2 + 5


def test_stats() -> None:
    assert spread([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "runs": [3.0, 1.0, 2.0],
    }
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_the_model_knows_each_outcome_and_every_final_balance() -> None:
    workload = build_workload(400, users=10)
    assert len(workload.status_of) == 400
    assert Counter(workload.status_of.values()) == workload.expected
    outcomes = dict(workload.status_of)
    assert workload.wrong_outcomes(outcomes) == []
    first = workload.commands[0]["command_id"]
    outcomes[first] = "rejected"
    assert workload.wrong_outcomes(outcomes) == [f"{first}: rejected != applied"]
    # A resent rejection is a duplicate for the ledger, refused again by the seed.
    resent = [c for c, o in workload.original_of.items() if o == "rejected"]
    assert all(workload.seed_status(c) == "rejected" for c in resent)
    balances = {key: w.reported() for key, w in workload.balances.items()}
    assert workload.wrong_balances(balances) == []
    key = sorted(balances)[0]
    balances[key] = (Decimal(1), Decimal(0), Decimal(1))
    assert len(workload.wrong_balances(balances)) == 1
    # The ledger's mix: swaps credit the swapper's ETH, liquidity funding no user wallet.
    wave2 = build_workload(2_000, users=20, wave2=True)
    assert any(currency == "ETH" for _, currency in wave2.balances)
    assert workload.wrong_balances({}) != []  # an absent wallet is zero, not what the model says


async def test_the_suite_on_a_tiny_input(infrastructure: Infrastructure, tmp_path: Path) -> None:
    config = SuiteConfig(
        runs=2,
        pipeline={50: 120, 1: 20},
        users=10,
        scale_commands=120,
        inprocess_commands=300,
        mongo_commands=60,
        mongo_batch=25,
        stand_in_mongo_commands=60,
        stand_in_mongo_batch=25,
        mongo_pipeline_commands=60,
        stand_in_mongo_pipeline_commands=60,
        stand_in_mongo_pipeline_batch=25,
        seed_handlers=4,
        ipn_rate=10,
        ipn_seconds=1,
        spot_orders=2_000,
        spot_takers=10,
        swaps=4,
        swap_concurrency=2,
        p2p_trades=4,
        p2p_concurrency=2,
        stand_in_p2p_trades=4,
        stand_in_p2p_concurrency=2,
        log_dir=tmp_path,
    )
    figures = await run_parts(infrastructure, config)

    assert figures.keys() >= TOP_KEYS | set(PARTS)
    json.dumps(figures)  # what build/bench.json gets
    for batch, count in (("50", 120), ("1", 20)):
        pipeline = figures["pipeline"]["by_batch"][batch]
        # Every result came back, each with its own outcome, and every offset was committed.
        assert sum(pipeline["statuses"].values()) == count
        assert pipeline["offsets_committed"] == count
        assert len(pipeline["commands_per_s"]["runs"]) == 2
        assert 0 < pipeline["latency_p50_ms"]["median"] <= pipeline["latency_p99_ms"]["median"]
    assert (
        figures["pipeline_commands_per_s"]
        == (figures["pipeline"]["by_batch"]["50"]["commands_per_s"]["median"])
    )
    assert figures["pipeline"]["echo"]["offsets_committed"] == 120
    assert figures["pipeline_efficiency"] == figures["pipeline"]["efficiency"]["median"] > 0
    assert figures["pipeline_mongo_commands_per_s"] > 0
    assert figures["pipeline_mongo"]["offsets_committed"] == 60
    assert set(figures["scale_commands_per_s"]) == {"1", "2"}
    assert figures["baseline_mongo_round_trips_per_command"] > 3
    assert figures["mongo_round_trips_per_command"] < 1
    assert figures["mongo"]["baseline"]["handlers"] == 4
    assert figures["baseline_commands_per_s"] > 0
    assert figures["spot"]["matcher_orders"] == 2_000
    assert figures["spot_matcher_orders_per_s"] > 0
    assert figures["spot"]["end_to_end_orders"] == 10
    assert figures["spot_end_to_end_orders_per_s"] > 0
    assert figures["swap"]["outcomes"] == {"completed": 4}
    assert figures["swaps_per_s"] > 0
    assert figures["p2p"]["outcomes"] == {"completed": 4}
    assert figures["p2p_trades_per_s"] > 0
    assert figures["p2p_create_to_escrowed_p50_ms"] > 0
    assert figures["p2p_release_to_completed_p50_ms"] > 0
    assert figures["speedup_vs_baseline"] > 0
    assert figures["modelled_speedup_vs_baseline"] > 0
    if infrastructure.mongodb.origin == "embedded":
        assert set(figures["reduced"]) == {"mongo", "pipeline_mongo", "p2p"}
    assert figures["ipn"]["answers"] == {"200 credited": 10}  # every IPN credited
    assert figures["ipn_answer_p99_ms"] > 0
    assert figures["ipn_to_balance_p99_ms"] > 0
    shown = table(figures)
    assert "pipeline_efficiency" in shown
    assert "pipeline, memory store, batch 50" in shown


async def test_a_wrong_answer_stops_the_suite() -> None:
    with pytest.raises(WrongAnswer, match="2 wrong against the model"):
        check("part", ["a", "b"])
    check("part", [])
