"""The matcher bench on a tiny input, so it cannot rot: shapes and that it matches, never speed."""

from __future__ import annotations

from bench.matcher import run_matcher_inprocess, spot_rows


def test_the_in_process_run_matches_orders() -> None:
    run = run_matcher_inprocess(2_000, seed=1)
    assert run.orders == 2_000
    assert 0 < run.fills < run.orders
    assert run.per_s > 0


def test_rows_show_the_spot_figures() -> None:
    figure = {"median": 1.0, "min": 1.0, "max": 2.0, "runs": [1.0, 1.0, 2.0]}
    rows = spot_rows(
        {
            "spot": {
                "matcher_orders_per_s": figure,
                "end_to_end_orders_per_s": figure,
                "end_to_end_p50_ms": figure,
                "end_to_end_p99_ms": figure,
                "mongodb": "embedded",
            }
        }
    )
    assert rows[0][0] == "spot matcher in process, one core: orders/s"
    assert rows[1][1] == "1.0 (1.0–2.0)"
    assert spot_rows({}) == []
