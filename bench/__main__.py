"""`python -m bench`: run the suite, print the table, write the figures to build/bench.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from bench.matcher import spot_rows
from bench.suite import SuiteConfig, run_suite


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "pending"
    return f"{value:,.{digits}f}"


def _cell(figure: dict[str, Any] | None, digits: int = 0) -> str:
    """median (min–max) of one figure."""
    if not figure:
        return "pending"
    median, low, high = (_fmt(figure[k], digits) for k in ("median", "min", "max"))
    return f"{median} ({low}–{high})"


def table(figures: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    for batch, figure in figures["pipeline"].items():
        rows.append(
            (
                f"pipeline, batch {batch} ({figure['commands']:,} commands): commands/s",
                _cell(figure["commands_per_s"]),
            )
        )
        rows.append(
            (
                f"pipeline, batch {batch}: latency p50 / p99 ms",
                f"{_cell(figure['latency_p50_ms'])} / {_cell(figure['latency_p99_ms'])}",
            )
        )
    inprocess = figures["inprocess"]
    rtt = inprocess["rtt_ms"]
    rows += [
        (
            "in-process ledger, batch 500, CPU only: commands/s",
            _cell(inprocess["ledger_cpu_commands_per_s"]),
        ),
        (
            "in-process seed baseline, CPU only: commands/s",
            _cell(inprocess["baseline_cpu_commands_per_s"]),
        ),
        (
            f"in-process ledger, {rtt} ms per round trip: commands/s",
            _cell(inprocess["ledger_commands_per_s"]),
        ),
        (
            f"in-process seed baseline, {rtt} ms per round trip: commands/s",
            _cell(inprocess["baseline_commands_per_s"]),
        ),
        ("speedup vs baseline (same model)", _cell(inprocess["speedup"], 1)),
    ]
    mongo = figures["mongo"]
    for side in ("ledger", "baseline"):
        trips = mongo[side].get("round_trips_per_command")
        rows.append(
            (f"MongoDB round trips per command, {side} ({mongo['mongodb']})", _cell(trips, 4))
        )
    ipn = figures["ipn"]
    load = f"{ipn['rate_per_s']:g}/s for {ipn['seconds']:g} s"
    rows += [
        (
            f"IPN ({load}): gateway answer p50 / p99 ms",
            f"{_cell(ipn['answer_p50_ms'], 1)} / {_cell(ipn['answer_p99_ms'], 1)}",
        ),
        (
            f"IPN ({load}): IPN → balance visible p50 / p99 ms",
            f"{_cell(ipn['to_balance_p50_ms'], 1)} / {_cell(ipn['to_balance_p99_ms'], 1)}",
        ),
    ]
    rows += spot_rows(figures)
    width = max(len(name) for name, _ in rows)
    m = figures["machine"]
    lines = [
        f"median (min–max) of {figures['runs']} runs; {m['nproc']} CPUs, {m['cpu']}, Python {m['python']};"
        f" kafka {figures['infrastructure']['kafka']}, mongodb {figures['infrastructure']['mongodb']}",
        *(f"{name.ljust(width)}  {value}" for name, value in rows),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/bench.json"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=0.5, help="charge per round trip in memory")
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run")
    parser.add_argument("--ipn-rate", type=float, help="IPNs per second (default: see docs)")
    parser.add_argument("--ipn-seconds", type=float, help="how long IPNs are fired")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # The clients' own chatter (connection retries while servers come up) is not the report.
    for noisy in ("aiokafka", "kafka", "faststream", "pymongo", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    log_dir = args.out.parent / "bench-logs"
    config = SuiteConfig(
        runs=args.runs,
        rtt_ms=args.rtt_ms,
        log_dir=log_dir,
        ipn_rate=args.ipn_rate,
        ipn_seconds=args.ipn_seconds,
    )
    if args.quick:
        config = SuiteConfig(
            runs=args.runs,
            rtt_ms=args.rtt_ms,
            log_dir=log_dir,
            pipeline={500: 2_000, 50: 500, 1: 100},
            users=50,
            inprocess_commands=2_000,
            mongo_commands=200,
            ipn_rate=20,
            ipn_seconds=2,
        )
    started = time.monotonic()
    figures = asyncio.run(run_suite(config))
    figures["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(table(figures))
    print(f"written to {args.out} in {figures['seconds']} s")


if __name__ == "__main__":
    main()
