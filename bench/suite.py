"""The whole suite: run every part, summarise each figure as the median of runs with min and max."""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.inprocess import Handled, modelled_per_s, run_ledger, run_seed
from bench.ipn import IpnRun, run_ipn
from bench.matcher import spot_part
from bench.mongo_cost import MongoRun, run_ledger_on_mongo, run_seed_on_mongo
from bench.pipeline import PipelineRun, WalletProcess, run_pipeline
from bench.stats import percentile, spread
from bench.workload import Workload, build_workload
from shared.infra import Infrastructure

log = logging.getLogger("bench")


@dataclass(frozen=True, slots=True)
class SuiteConfig:
    runs: int = 3
    # Commands per pipeline run by batch size: small batches are slow, so they get fewer.
    pipeline: dict[int, int] = field(default_factory=lambda: {500: 50_000, 50: 10_000, 1: 1_000})
    users: int = 1_000
    inprocess_commands: int = 50_000
    inprocess_batch: int = 500
    mongo_commands: int = 2_000
    mongo_batch: int = 500
    mongo_runs: int = 1  # the count is exact: one run gives it, more only repeat it
    # What one database round trip is charged in the in-memory comparison (see docs).
    rtt_ms: float = 0.5
    # The asked load is 100 IPNs/s for 30 s. The gateway keeps its state in MongoDB, and the
    # embedded stand-in falls behind at that rate (answers queue up for seconds: its timing, not
    # the gateway's), so on the stand-in the default is a load it sustains. None = that default.
    ipn_rate: float | None = None
    ipn_seconds: float | None = None
    log_dir: Path | None = None
    spot_orders: int = 200_000  # in-process matcher orders per run
    spot_takers: int = 200  # end to end, one run (MongoDB-bound on the stand-in)


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def _latency(run: PipelineRun, fraction: float) -> float:
    return percentile(run.latencies_ms, fraction)


async def pipeline_part(bootstrap: str, config: SuiteConfig) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    how = WalletProcess(log_dir=config.log_dir)
    for batch_size, count in config.pipeline.items():
        runs: list[PipelineRun] = []
        for attempt in range(config.runs):
            workload = build_workload(
                count, users=config.users, seed=attempt, tag=f"p{attempt}", wave2=True
            )
            run = await run_pipeline(bootstrap, workload, batch_size, how=how)
            if run.statuses != workload.expected:
                raise AssertionError(f"batch {batch_size}: {run.statuses} != {workload.expected}")
            log.info("pipeline batch %d run %d: %.0f commands/s", batch_size, attempt, run.per_s)
            runs.append(run)
        figures[str(batch_size)] = {
            "commands": count,
            "commands_per_s": spread([r.per_s for r in runs]),
            "latency_p50_ms": spread([_latency(r, 0.50) for r in runs]),
            "latency_p99_ms": spread([_latency(r, 0.99) for r in runs]),
            "send_seconds": spread([r.send_seconds for r in runs]),
            "statuses": dict(runs[-1].statuses),
        }
    return figures


async def mongo_part(url: str, origin: str, config: SuiteConfig) -> dict[str, Any]:
    ledger_runs: list[MongoRun] = []
    seed_runs: list[MongoRun] = []
    for attempt in range(config.mongo_runs):
        # The ledger runs its own mix (the seed's, plus swaps and named-hold orders, which the
        # seed cannot run); the seed runs the common one.
        def mix(wave2: bool, attempt: int = attempt) -> Workload:
            return build_workload(
                config.mongo_commands,
                users=config.users,
                seed=attempt,
                tag=f"m{attempt}",
                wave2=wave2,
            )

        ledger_runs.append(await run_ledger_on_mongo(url, mix(True), config.mongo_batch))
        seed_runs.append(await run_seed_on_mongo(url, mix(False)))
    timed = origin != "embedded"  # never time the stand-in

    def summary(runs: list[MongoRun]) -> dict[str, Any]:
        return {
            "commands": config.mongo_commands,
            "round_trips_per_command": spread([r.round_trips_per_command for r in runs]),
            "by_command": dict(runs[-1].by_name),
            "statuses": dict(runs[-1].statuses),
            "commands_per_s": spread([r.commands / r.seconds for r in runs]) if timed else None,
        }

    return {
        "mongodb": origin,
        "batch_size": config.mongo_batch,
        "ledger": summary(ledger_runs),
        "baseline": summary(seed_runs),
    }


async def inprocess_part(config: SuiteConfig, rtt_by_side: dict[str, float]) -> dict[str, Any]:
    ledger_runs: list[Handled] = []
    seed_runs: list[Handled] = []
    for attempt in range(config.runs):
        workload = build_workload(
            config.inprocess_commands, users=config.users, seed=attempt, tag=f"i{attempt}"
        )
        commands = workload.parsed()
        ledger = await run_ledger(commands, config.inprocess_batch)
        seed = await run_seed(commands)
        if ledger.balances != seed.balances:
            raise AssertionError("the ledger and the seed disagree on the final balances")
        ledger_runs.append(ledger)
        seed_runs.append(seed)
    rtt = config.rtt_ms / 1000

    def modelled(run: Handled, side: str) -> float:
        per_command = rtt_by_side.get(side, run.round_trips_per_command)
        return modelled_per_s(run.seconds / run.commands, per_command, rtt)

    ledger_at_rtt = [modelled(r, "ledger") for r in ledger_runs]
    seed_at_rtt = [modelled(r, "baseline") for r in seed_runs]
    return {
        "commands": config.inprocess_commands,
        "batch_size": config.inprocess_batch,
        "rtt_ms": config.rtt_ms,
        "round_trips_per_command_charged": {
            "ledger": rtt_by_side.get("ledger", ledger_runs[-1].round_trips_per_command),
            "baseline": rtt_by_side.get("baseline", seed_runs[-1].round_trips_per_command),
        },
        "ledger_cpu_commands_per_s": spread([r.per_s for r in ledger_runs]),
        "baseline_cpu_commands_per_s": spread([r.per_s for r in seed_runs]),
        "ledger_commands_per_s": spread(ledger_at_rtt),
        "baseline_commands_per_s": spread(seed_at_rtt),
        "speedup": spread([a / b for a, b in zip(ledger_at_rtt, seed_at_rtt, strict=True)]),
        "statuses": {
            "ledger": dict(ledger_runs[-1].statuses),
            "baseline": dict(seed_runs[-1].statuses),
        },
    }


async def ipn_part(infra: Infrastructure, config: SuiteConfig) -> dict[str, Any]:
    embedded = infra.mongodb.origin == "embedded"
    rate = config.ipn_rate or (20.0 if embedded else 100.0)
    seconds = config.ipn_seconds or (10.0 if embedded else 30.0)
    runs: list[IpnRun] = []
    for attempt in range(config.runs):
        run = await run_ipn(
            infra.kafka_bootstrap_servers,
            infra.mongodb_url,
            rate=rate,
            seconds=seconds,
            log_dir=config.log_dir,
        )
        if run.answers != {"200 credited": run.sent} or len(run.to_balance_ms) != run.sent:
            raise AssertionError(f"IPN run {attempt}: {dict(run.answers)}")
        log.info("ipn run %d: answer p99 %.1f ms", attempt, percentile(run.answers_ms, 0.99))
        runs.append(run)
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "ipns": runs[-1].sent,
        # The gateway keeps its state in MongoDB: on the embedded stand-in these are its timings.
        "mongodb": infra.mongodb.origin,
        "answer_p50_ms": spread([percentile(r.answers_ms, 0.50) for r in runs]),
        "answer_p99_ms": spread([percentile(r.answers_ms, 0.99) for r in runs]),
        "to_balance_p50_ms": spread([percentile(r.to_balance_ms, 0.50) for r in runs]),
        "to_balance_p99_ms": spread([percentile(r.to_balance_ms, 0.99) for r in runs]),
        "answers": dict(runs[-1].answers),
    }


def _median(figure: dict[str, Any] | None, *path: str) -> float | None:
    node: Any = figure
    for step in path:
        if not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    return float(node["median"]) if isinstance(node, dict) and "median" in node else None


async def run_suite(config: SuiteConfig) -> dict[str, Any]:
    """Every part, on KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL if set, the embedded ones if not."""
    async with Infrastructure.from_environment(log_dir=config.log_dir) as infra:
        log.info("%s; %s", infra.kafka.describe(), infra.mongodb.describe())
        return await run_parts(infra, config)


async def run_parts(infra: Infrastructure, config: SuiteConfig) -> dict[str, Any]:
    mongo = await mongo_part(infra.mongodb_url, infra.mongodb.origin, config)
    rtt_by_side = {
        side: m
        for side in ("ledger", "baseline")
        if (m := _median(mongo, side, "round_trips_per_command")) is not None
    }
    inprocess = await inprocess_part(config, rtt_by_side)
    pipeline = await pipeline_part(infra.kafka_bootstrap_servers, config)
    ipn = await ipn_part(infra, config)
    spot = await spot_part(
        infra.kafka_bootstrap_servers,
        (infra.mongodb_url, infra.mongodb.origin),
        runs=config.runs,
        orders=config.spot_orders,
        takers=config.spot_takers,
        log_dir=config.log_dir,
    )
    largest = str(max(config.pipeline))
    return {
        "pipeline_commands_per_s": _median(pipeline, largest, "commands_per_s"),
        "mongo_round_trips_per_command": _median(mongo, "ledger", "round_trips_per_command"),
        "baseline_mongo_round_trips_per_command": _median(
            mongo, "baseline", "round_trips_per_command"
        ),
        "baseline_commands_per_s": _median(inprocess, "baseline_commands_per_s"),
        "speedup_vs_baseline": _median(inprocess, "speedup"),
        "ipn_answer_p99_ms": _median(ipn, "answer_p99_ms"),
        "ipn_to_balance_p99_ms": _median(ipn, "to_balance_p99_ms"),
        "machine": machine(),
        "infrastructure": {"kafka": infra.kafka.origin, "mongodb": infra.mongodb.origin},
        "runs": config.runs,
        "pipeline": pipeline,
        "mongo": mongo,
        "inprocess": inprocess,
        "ipn": ipn,
        "spot": spot,
    }
