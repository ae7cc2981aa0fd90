"""`python -m bench.hotpath --baseline REV`: the wallet's own work per command, in turns with REV's.

Through Kafka (`bench.compare`) the wallet waits on the broker about 40 % of its time and the
machine's other jobs move a run by 10 to 30 %: a saving of a tenth of the CPU is below what that
can tell. This times the wallet's work without Kafka, in a process of its own per side and turn:
the commands (the ledger's mix, as they are on the wire) decoded with `parse_command`, decided by
`LedgerService.handle_batch` over the memory store in batches, and every result and event encoded
with `encode`; with the wallet process's own collector settings. REV's code runs with its sources
first on PYTHONPATH (as in `bench.compare`); each side's figure is its best of a few repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compare import extract
from bench.stats import spread
from bench.workload import build_workload

PHASES = ("parse", "ledger", "encode")


async def _timed_run(values: list[bytes], batch: int) -> dict[str, float]:
    from shared.messaging import encode, parse_command
    from wallet.adapters.memory_store import InMemoryLedgerStore
    from wallet.application.ledger_service import LedgerService

    ledger = LedgerService(InMemoryLedgerStore())
    seconds = dict.fromkeys(PHASES, 0.0)
    for first in range(0, len(values), batch):
        started = time.perf_counter()
        commands = [parse_command(value) for value in values[first : first + batch]]
        parsed = time.perf_counter()
        report = await ledger.handle_batch(commands)
        decided = time.perf_counter()
        for _, result in report.results:
            encode(result)
        for event in report.events:
            encode(event)
        seconds["parse"] += parsed - started
        seconds["ledger"] += decided - parsed
        seconds["encode"] += time.perf_counter() - decided
    return seconds


def measure(commands: int, batch: int, repeats: int) -> dict[str, float]:
    """Microseconds per command of each phase, the best of `repeats` runs (by their total)."""
    from wallet.__main__ import tune_garbage_collector

    workload = build_workload(commands, seed=3, tag="hot", wave2=True)
    values = [workload.encoded(index) for index in range(len(workload))]
    tune_garbage_collector()
    runs = [asyncio.run(_timed_run(values, batch)) for _ in range(repeats)]
    best = min(runs, key=lambda run: sum(run.values()))
    return {phase: best[phase] / commands * 1e6 for phase in PHASES}


def _child(pythonpath: str | None, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, "-m", "bench.hotpath", "--measure"]
    command += ["--commands", str(args.commands), "--batch", str(args.batch)]
    command += ["--repeats", str(args.repeats)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def compare(args: argparse.Namespace) -> dict[str, Any]:
    baseline_path = extract(args.baseline, Path(tempfile.mkdtemp(prefix="bench-hotpath-")))
    sides: dict[str, dict[str, list[float]]] = {
        side: {phase: [] for phase in (*PHASES, "total")} for side in ("baseline", "this")
    }
    for turn in range(args.turns):
        for side, pythonpath in (("baseline", baseline_path), ("this", None)):
            figures = _child(pythonpath, args)
            figures["total"] = sum(figures[phase] for phase in PHASES)
            for phase, value in figures.items():
                sides[side][phase].append(value)
            shown = ", ".join(f"{phase} {value:.1f}" for phase, value in figures.items())
            print(f"turn {turn} {side}: {shown} µs per command", flush=True)
    ratios = {
        phase: spread(
            [b / t for b, t in zip(sides["baseline"][phase], sides["this"][phase], strict=True)]
        )
        for phase in sides["this"]
    }
    return {
        "baseline": args.baseline,
        "commands": args.commands,
        "batch_size": args.batch,
        "us_per_command": sides,
        "ratio_baseline_over_this": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--baseline", help="a git revision of this repository")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.commands, args.batch, args.repeats)))
        return
    if args.baseline is None:
        parser.error("--baseline is required")
    text = json.dumps(compare(args), indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
