"""`python -m bench.compare --baseline REV`: this checkout's wallet against an earlier one's, in turns.

On a shared machine the speed changes by the hour, so two `make bench` runs cannot say whether a
change made the wallet faster. This runs the same pipeline (memory store, one wallet process)
alternately with the wallet and shared code of REV (extracted with `git archive` and put first on
the wallet process's PYTHONPATH) and with this checkout's, and reports each pair's ratio. Both
sides are checked against the workload's model like every bench run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.pipeline import WalletProcess, run_pipeline
from bench.stats import spread
from bench.workload import build_workload
from shared.infra import Infrastructure

SOURCES = ("services/wallet/src", "shared/src")


def extract(revision: str, into: Path) -> str:
    """The wallet's and shared's sources at `revision`, as a PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", revision, *SOURCES], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return ":".join(str(into / source) for source in SOURCES)


async def compare(revision: str, runs: int, commands: int, batch: int) -> dict[str, Any]:
    baseline_path = extract(revision, Path(tempfile.mkdtemp(prefix="bench-baseline-")))
    sides = {
        "baseline": WalletProcess(extra_env=(("PYTHONPATH", baseline_path),)),
        "this": WalletProcess(),
    }
    per_s: dict[str, list[float]] = {side: [] for side in sides}
    async with Infrastructure.from_environment() as infra:
        for attempt in range(runs):
            workload = build_workload(commands, seed=attempt, tag=f"c{attempt}")
            for side, how in sides.items():
                run = await run_pipeline(infra.kafka_bootstrap_servers, workload, batch, how=how)
                if run.wrong:
                    raise AssertionError(f"{side} run {attempt}: {run.wrong[:3]}")
                per_s[side].append(run.per_s)
                print(f"run {attempt} {side}: {run.per_s:,.0f} commands/s", flush=True)
    ratios = [a / b for a, b in zip(per_s["this"], per_s["baseline"], strict=True)]
    return {
        "baseline": revision,
        "commands": commands,
        "batch_size": batch,
        "baseline_commands_per_s": spread(per_s["baseline"]),
        "this_commands_per_s": spread(per_s["this"]),
        "ratio": spread(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--baseline", required=True, help="a git revision of this repository")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    figures = asyncio.run(compare(args.baseline, args.runs, args.commands, args.batch))
    text = json.dumps(figures, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
