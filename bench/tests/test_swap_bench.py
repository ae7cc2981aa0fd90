"""The swap bench on a tiny input: every swap completes and every figure is measured."""

from __future__ import annotations

from bench.swap import run_swaps
from shared.infra import Infrastructure


async def test_the_swap_bench_on_a_tiny_input(infrastructure: Infrastructure) -> None:
    run = await run_swaps(infrastructure, swaps=5, concurrency=2)
    figures = run.figures()
    assert figures["outcomes"] == {"completed": 5}
    assert len(run.to_completed_ms) == 5
    assert all(
        figures[name] is not None and figures[name] > 0
        for name in ("swaps_per_s", "quote_p50_ms", "execute_p99_ms", "execute_to_completed_p99_ms")
    )
    # Completion includes the execute's answer: it can never be the shorter of the two.
    assert min(c - e for c, e in zip(run.to_completed_ms, run.execute_ms, strict=True)) >= 0
