"""Median of runs with min and max, and percentiles of latency samples."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TypedDict


class Spread(TypedDict):
    median: float
    min: float
    max: float
    runs: list[float]


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no runs to summarise")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation between two."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def p50_p99_ms(name: str, samples: Sequence[float]) -> dict[str, float | None]:
    """`<name>_p50_ms` and `<name>_p99_ms` of latency samples, to 0.1 ms (None: no samples)."""
    return {
        f"{name}_p{round(fraction * 100)}_ms": round(percentile(samples, fraction), 1)
        if samples
        else None
        for fraction in (0.5, 0.99)
    }
