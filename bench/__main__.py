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
from bench.suite import PARTS, SuiteConfig, run_suite


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
    pipeline = figures.get("pipeline")
    if pipeline:
        largest = str(pipeline["largest_batch"])
        echo = pipeline["echo"]
        rows.append(
            (
                f"echo consumer, batch {largest} ({echo['commands']:,} commands): commands/s",
                _cell(echo["commands_per_s"]),
            )
        )
        for batch, figure in pipeline["by_batch"].items():
            name = f"pipeline, memory store, batch {batch} ({figure['commands']:,} commands)"
            rows.append((f"{name}: commands/s", _cell(figure["commands_per_s"])))
            rows.append(
                (
                    f"pipeline, batch {batch}: latency p50 / p99 ms",
                    f"{_cell(figure['latency_p50_ms'])} / {_cell(figure['latency_p99_ms'])}",
                )
            )
        rows.append(
            (
                f"pipeline_efficiency (wallet ÷ echo, batch {largest}, same attempt)",
                _cell(pipeline["efficiency"], 2),
            )
        )
    mongo_pipeline = figures.get("pipeline_mongo")
    if mongo_pipeline:
        rows.append(
            (
                f"pipeline, MongoDB store ({mongo_pipeline['mongodb']}), batch "
                f"{mongo_pipeline['batch_size']} ({mongo_pipeline['commands']:,} commands): "
                "commands/s",
                _cell(mongo_pipeline["commands_per_s"]),
            )
        )
    scale = figures.get("scale")
    if scale:
        for processes, figure in scale.items():
            if isinstance(figure, dict) and "commands_per_s" in figure:
                rows.append(
                    (
                        f"{processes} wallet process(es), one group, memory store "
                        f"({figure['commands']:,} commands): commands/s",
                        _cell(figure["commands_per_s"]),
                    )
                )
    mongo = figures.get("mongo")
    if mongo:
        origin = mongo["mongodb"]
        for side, name in (("ledger", "ledger, batches"), ("baseline", "seed design")):
            rows.append(
                (
                    f"MongoDB ({origin}) {name}: round trips per command",
                    _cell(mongo[side]["round_trips_per_command"], 4),
                )
            )
            rows.append(
                (
                    f"MongoDB ({origin}) {name}: commands/s (measured)",
                    _cell(mongo[side]["commands_per_s"]),
                )
            )
        rows.append((f"MongoDB ({origin}) speedup, measured", _cell(mongo["speedup"], 1)))
    inprocess = figures.get("inprocess")
    if inprocess:
        rtt = inprocess["rtt_ms"]
        rows += [
            (
                "model: in-process ledger, CPU only: commands/s",
                _cell(inprocess["ledger_cpu_commands_per_s"]),
            ),
            (
                "model: in-process seed, CPU only: commands/s",
                _cell(inprocess["baseline_cpu_commands_per_s"]),
            ),
            (f"model: speedup at {rtt} ms per round trip", _cell(inprocess["speedup"], 1)),
        ]
    ipn = figures.get("ipn")
    if ipn:
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
    swap = figures.get("swap")
    if swap:
        rows += [
            (
                f"swaps quote → execute → completed ({swap['mongodb']} MongoDB): swaps/s",
                f"{swap['swaps_per_s']}",
            ),
            (
                "swap execute → completed: p50 / p99 ms",
                f"{swap['execute_to_completed_p50_ms']} / {swap['execute_to_completed_p99_ms']}",
            ),
        ]
    p2p = figures.get("p2p")
    if p2p:
        rows += [
            (
                f"P2P trades create → completed ({p2p['mongodb']} MongoDB, {p2p['trades']} "
                f"trades, {p2p['concurrency']} pairs): trades/s",
                f"{p2p['trades_per_s']}",
            ),
            (
                "P2P create → escrowed / release → completed: p50 ms",
                f"{p2p['create_to_escrowed_p50_ms']} / {p2p['release_to_completed_p50_ms']}",
            ),
        ]
    width = max(len(name) for name, _ in rows)
    m = figures["machine"]
    lines = [
        f"median (min–max) of {figures['runs']} runs; {m['nproc']} CPUs, {m['cpu']}, Python "
        f"{m['python']}; kafka {figures['infrastructure']['kafka']}, mongodb "
        f"{figures['infrastructure']['mongodb']}",
        *(f"{name.ljust(width)}  {value}" for name, value in rows),
        *(f"reduced input, {part}: {why}" for part, why in figures.get("reduced", {}).items()),
        "shared machines change speed by the hour: compare the ratios taken in one run "
        "(pipeline_efficiency, speedup), not absolute figures across runs",
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
    parser.add_argument("--parts", help=f"comma-separated, of: {', '.join(PARTS)} (default: all)")
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
            scale_commands=2_000,
            inprocess_commands=2_000,
            mongo_commands=200,
            stand_in_mongo_commands=200,
            stand_in_mongo_batch=100,
            mongo_pipeline_commands=500,
            stand_in_mongo_pipeline_commands=300,
            stand_in_mongo_pipeline_batch=100,
            ipn_rate=20,
            ipn_seconds=2,
            p2p_trades=40,
            stand_in_p2p_trades=12,
            stand_in_p2p_concurrency=3,
        )
    started = time.monotonic()
    only = tuple(args.parts.split(",")) if args.parts else None
    figures = asyncio.run(run_suite(config, only))
    figures["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(table(figures))
    print(f"written to {args.out} in {figures['seconds']} s")


if __name__ == "__main__":
    main()
