"""The whole suite: run every part, summarise each figure as the median of runs with min and max.

A part is an async function (infrastructure, config, the figures of the parts before it) → its
figures; `PARTS` lists them in running order. A new path (a matcher, a swap, P2P) adds its module, one
entry in `PARTS` and its headline figures in `headline`.

Every part checks the system's answers against the workload's model (each command's outcome,
every final balance, the offsets committed): a wrong answer stops the suite with `WrongAnswer`.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import p2p
from bench.inprocess import Handled, modelled_per_s, run_ledger, run_seed
from bench.ipn import IpnRun, run_ipn
from bench.matcher import spot_part
from bench.mongo_cost import MongoRun, run_ledger_on_mongo, run_seed_on_mongo
from bench.pipeline import PipelineRun, WalletProcess, run_pipeline
from bench.stats import Spread, percentile, spread
from bench.swap import run_swaps
from bench.workload import Workload, build_workload
from shared.infra import Infrastructure

log = logging.getLogger("bench")


@dataclass(frozen=True, slots=True)
class SuiteConfig:
    runs: int = 3
    # Commands per pipeline run by batch size: small batches are slow, so they get fewer.
    pipeline: dict[int, int] = field(default_factory=lambda: {500: 50_000, 50: 10_000, 1: 1_000})
    users: int = 1_000
    # Scaling out: wallet processes in one consumer group (memory store), commands per run.
    scale_processes: tuple[int, ...] = (1, 2)
    scale_commands: int = 20_000
    inprocess_commands: int = 50_000
    inprocess_batch: int = 500
    mongo_commands: int = 2_000
    mongo_batch: int = 500
    mongo_runs: int = 1  # the counts are exact; the stand-in is slow
    seed_handlers: int = 16  # concurrent request handlers calling the seed's design
    # The embedded stand-in is slow and gets slower as collections grow (DESIGN.md): its parts
    # run on this smaller input, and the figures say so. At 1,000 commands in batches of 200 the
    # last batches came close to the client's operation timeout on a loaded machine.
    stand_in_mongo_commands: int = 600
    stand_in_mongo_batch: int = 200
    # The pipeline with the MongoDB store, end to end.
    mongo_pipeline_commands: int = 5_000
    mongo_pipeline_batch: int = 500
    stand_in_mongo_pipeline_commands: int = 600
    stand_in_mongo_pipeline_batch: int = 200
    # The spot matcher: orders per in-process run, and crossing orders end to end (one run; bound
    # by the MongoDB the trading service keeps its orders in).
    spot_orders: int = 200_000
    spot_takers: int = 200
    # The swap path end to end: quote → execute → completed, through trading and the wallet.
    swaps: int = 200
    swap_concurrency: int = 8
    # The P2P escrow path end to end (bench.p2p): whole trades in closed loops. p2p keeps its
    # trades in MongoDB: smaller on the stand-in.
    p2p_trades: int = p2p.TRADES
    p2p_concurrency: int = p2p.CONCURRENCY
    stand_in_p2p_trades: int = p2p.STAND_IN_TRADES
    stand_in_p2p_concurrency: int = p2p.STAND_IN_CONCURRENCY
    # What one database round trip is charged in the modelled in-memory comparison (see docs).
    rtt_ms: float = 0.5
    # The asked load is 100 IPNs/s for 30 s. The gateway keeps its state in MongoDB, and the
    # embedded stand-in falls behind at that rate (answers queue up for seconds: its timing, not
    # the gateway's), so on the stand-in the default is a load it sustains. None = that default.
    ipn_rate: float | None = None
    ipn_seconds: float | None = None
    log_dir: Path | None = None


class WrongAnswer(AssertionError):
    """The system answered wrongly during a benchmark: a figure from it would mean nothing."""


def check(part: str, wrong: list[str]) -> None:
    if wrong:
        shown = "; ".join(wrong[:5])
        raise WrongAnswer(f"{part}: {len(wrong)} wrong against the model, e.g. {shown}")


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


async def mongo_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
    """The batch ledger and the seed's design (one transaction per call, concurrent handlers) on
    the same MongoDB, in the same run: round trips per command and commands/s, both measured."""
    stand_in = infra.mongodb.origin == "embedded"
    count = config.stand_in_mongo_commands if stand_in else config.mongo_commands
    batch = config.stand_in_mongo_batch if stand_in else config.mongo_batch
    ledger_runs: list[MongoRun] = []
    seed_runs: list[MongoRun] = []
    for attempt in range(config.mongo_runs):
        # The ledger runs its own mix (the seed's, plus swaps and named-hold orders, which the
        # seed cannot run); the seed runs the common one.
        def mix(wave2: bool, attempt: int = attempt) -> Workload:
            return build_workload(
                count, users=config.users, seed=attempt, tag=f"m{attempt}", wave2=wave2
            )

        ledger = await run_ledger_on_mongo(infra.mongodb_url, mix(True), batch)
        check(f"ledger on MongoDB run {attempt}", ledger.wrong)
        seed = await run_seed_on_mongo(
            infra.mongodb_url, mix(False), handlers=config.seed_handlers, serialise=stand_in
        )
        check(f"seed on MongoDB run {attempt}", seed.wrong)
        log.info("MongoDB: ledger %.0f/s, seed %.0f/s", ledger.per_s, seed.per_s)
        ledger_runs.append(ledger)
        seed_runs.append(seed)

    def summary(runs: list[MongoRun]) -> dict[str, Any]:
        return {
            "commands": count,
            "round_trips_per_command": spread([r.round_trips_per_command for r in runs]),
            "commands_per_s": spread([r.per_s for r in runs]),
            "by_command": dict(runs[-1].by_name),
            "statuses": dict(runs[-1].statuses),
            "checked": "outcome per command, balances",
        }

    figure: dict[str, Any] = {
        "mongodb": infra.mongodb.origin,
        "batch_size": batch,
        "ledger": summary(ledger_runs),
        "baseline": summary(seed_runs)
        | {
            "design": "one MongoDB transaction per call: guard find, read, check, update, "
            "history insert, commit",
            "handlers": config.seed_handlers,
            "transactions": "one at a time (the stand-in refuses overlapping commits)"
            if stand_in
            else "concurrent, retried on TransientTransactionError",
        },
        "speedup": spread([a.per_s / b.per_s for a, b in zip(ledger_runs, seed_runs, strict=True)]),
    }
    if stand_in:
        figure["reduced"] = (
            f"embedded MongoDB stand-in: {count:,} commands, ledger batches of {batch} "
            f"(a real MongoDB: {config.mongo_commands:,} in batches of {config.mongo_batch}); "
            "commands/s are the stand-in's, which charges per document written, not per round trip"
        )
    return figure


async def pipeline_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
    """The wallet at every batch size; at the largest, the echo consumer in the same attempt."""
    bootstrap = infra.kafka_bootstrap_servers
    figures: dict[str, Any] = {"by_batch": {}}
    how = WalletProcess(log_dir=config.log_dir)
    largest = max(config.pipeline)
    efficiency: list[float] = []
    echo_runs: list[PipelineRun] = []
    for batch_size, count in config.pipeline.items():
        runs: list[PipelineRun] = []
        for attempt in range(config.runs):
            workload = build_workload(
                count, users=config.users, seed=attempt, tag=f"p{attempt}", wave2=True
            )
            if batch_size == largest:
                echo = await run_pipeline(bootstrap, workload, batch_size, how=how, consumer="echo")
                check(f"echo run {attempt}", echo.wrong)
                log.info("echo run %d: %.0f commands/s", attempt, echo.per_s)
                echo_runs.append(echo)
            run = await run_pipeline(bootstrap, workload, batch_size, how=how)
            check(f"pipeline batch {batch_size} run {attempt}", run.wrong)
            log.info("pipeline batch %d run %d: %.0f commands/s", batch_size, attempt, run.per_s)
            runs.append(run)
            if batch_size == largest:
                efficiency.append(run.per_s / echo_runs[-1].per_s)
        figures["by_batch"][str(batch_size)] = _pipeline_figure(runs, count)
    figures["echo"] = _pipeline_figure(echo_runs, config.pipeline[largest])
    figures["efficiency"] = spread(efficiency)
    figures["largest_batch"] = largest
    return figures


def _pipeline_figure(runs: list[PipelineRun], count: int) -> dict[str, Any]:
    return {
        "commands": count,
        "commands_per_s": spread([r.per_s for r in runs]),
        "latency_p50_ms": spread([_latency(r, 0.50) for r in runs]),
        "latency_p99_ms": spread([_latency(r, 0.99) for r in runs]),
        "send_seconds": spread([r.send_seconds for r in runs]),
        "statuses": dict(runs[-1].statuses),
        "offsets_committed": runs[-1].offsets_committed,
        "broker_wait_share": _spread_of([r.broker_wait_share for r in runs]),
        # Checked in every run; a wrong one stops the suite.
        "checked": "outcome per command, balances, offsets committed",
    }


def _spread_of(values: list[float | None]) -> Spread | None:
    known = [v for v in values if v is not None]
    return spread(known) if known else None


async def mongo_pipeline_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
    """The wallet with the MongoDB store, end to end: produce → consume → commit → result."""
    stand_in = infra.mongodb.origin == "embedded"
    count = config.stand_in_mongo_pipeline_commands if stand_in else config.mongo_pipeline_commands
    batch = config.stand_in_mongo_pipeline_batch if stand_in else config.mongo_pipeline_batch
    runs = 1 if stand_in else config.runs
    how = WalletProcess(log_dir=config.log_dir, mongodb_url=infra.mongodb_url)
    done: list[PipelineRun] = []
    for attempt in range(runs):
        workload = build_workload(
            count, users=config.users, seed=attempt, tag=f"q{attempt}", wave2=True
        )
        run = await run_pipeline(infra.kafka_bootstrap_servers, workload, batch, how=how)
        check(f"pipeline with MongoDB run {attempt}", run.wrong)
        log.info("pipeline with MongoDB run %d: %.0f commands/s", attempt, run.per_s)
        done.append(run)
    figure = _pipeline_figure(done, count)
    figure |= {"mongodb": infra.mongodb.origin, "batch_size": batch, "runs": runs}
    if stand_in:
        figure["reduced"] = (
            f"embedded MongoDB stand-in: {count:,} commands in batches of {batch}, one run "
            f"(a real MongoDB: {config.mongo_pipeline_commands:,} in batches of "
            f"{config.mongo_pipeline_batch}, {config.runs} runs); the timing is the stand-in's"
        )
    return figure


async def scale_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
    """1, 2, … wallet processes in one consumer group on the commands' partitions (memory store)."""
    how = WalletProcess(log_dir=config.log_dir)
    batch = max(config.pipeline)
    figures: dict[str, Any] = {
        "commands": config.scale_commands,
        "batch_size": batch,
        "store": "memory",
        "nproc": os.cpu_count(),
        "note": "the MongoDB stand-in takes one writer only: two processes need a real MongoDB",
    }
    for processes in config.scale_processes:
        runs: list[PipelineRun] = []
        for attempt in range(config.runs):
            workload = build_workload(
                config.scale_commands,
                users=config.users,
                seed=attempt,
                tag=f"s{attempt}",
                wave2=True,
            )
            run = await run_pipeline(
                infra.kafka_bootstrap_servers, workload, batch, how=how, processes=processes
            )
            check(f"{processes} wallet processes run {attempt}", run.wrong)
            log.info("%d wallet processes run %d: %.0f commands/s", processes, attempt, run.per_s)
            runs.append(run)
        figures[str(processes)] = _pipeline_figure(runs, config.scale_commands)
    return figures


async def inprocess_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
    """A model, the secondary comparison: both designs' handling time in one process, plus a
    charge per round trip (the counts measured on MongoDB). It moves with the machine."""
    mongo = earlier.get("mongo", {})
    rtt_by_side = {
        side: m
        for side in ("ledger", "baseline")
        if (m := _median(mongo, side, "round_trips_per_command")) is not None
    }
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
            raise WrongAnswer("the ledger and the seed disagree on the final balances")
        ledger_runs.append(ledger)
        seed_runs.append(seed)
    rtt = config.rtt_ms / 1000

    def modelled(run: Handled, side: str) -> float:
        per_command = rtt_by_side.get(side, run.round_trips_per_command)
        return modelled_per_s(run.seconds / run.commands, per_command, rtt)

    ledger_at_rtt = [modelled(r, "ledger") for r in ledger_runs]
    seed_at_rtt = [modelled(r, "baseline") for r in seed_runs]
    return {
        "model": f"CPU time in one process + {config.rtt_ms} ms per round trip; not measured",
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


async def ipn_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
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
            raise WrongAnswer(f"IPN run {attempt}: {dict(run.answers)}")
        check(f"IPN run {attempt}", run.wrong)
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
        "checked": "one 200 credited answer per IPN; exactly one applied credit per deposit and "
        "its amount as the balance",
    }


def _median(figure: dict[str, Any] | None, *path: str) -> float | None:
    node: Any = figure
    for step in path:
        if not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    return float(node["median"]) if isinstance(node, dict) and "median" in node else None


async def spot_suite_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
    """The matcher in one core, and orders placed → settled with the wallet (bench.matcher)."""
    return await spot_part(
        infra.kafka_bootstrap_servers,
        (infra.mongodb_url, infra.mongodb.origin),
        runs=config.runs,
        orders=config.spot_orders,
        takers=config.spot_takers,
        log_dir=config.log_dir,
    )


async def swap_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
    """Swaps quoted, executed and completed through trading and the wallet (bench.swap)."""
    run = await run_swaps(infra, config.swaps, config.swap_concurrency)
    if run.outcomes.get("completed", 0) != config.swaps:
        raise WrongAnswer(f"swaps ended {dict(run.outcomes)}, {config.swaps} completed expected")
    check("swap", run.wrong)
    return {**run.figures(), "mongodb": infra.mongodb.origin}


async def p2p_part(
    infra: Infrastructure, config: SuiteConfig, earlier: dict[str, Any]
) -> dict[str, Any]:
    """Whole P2P trades, create → escrowed → paid → released → completed (bench.p2p)."""
    stand_in = infra.mongodb.origin == "embedded"
    trades = config.stand_in_p2p_trades if stand_in else config.p2p_trades
    concurrency = config.stand_in_p2p_concurrency if stand_in else config.p2p_concurrency
    run = await p2p.run_p2p(infra, trades, concurrency, config.log_dir)
    check("p2p", run.wrong)
    log.info("p2p: %.1f trades/s", run.trades / run.seconds)
    figure = run.figures()
    if stand_in:
        figure["reduced"] = (
            f"embedded MongoDB stand-in: {trades} trades by {concurrency} pairs (a real MongoDB: "
            f"{config.p2p_trades} by {config.p2p_concurrency}); the timing is the stand-in's"
        )
    return figure


Part = Callable[[Infrastructure, SuiteConfig, dict[str, Any]], Awaitable[dict[str, Any]]]

# In running order; the in-process model reads the round trips the MongoDB part counted.
PARTS: dict[str, Part] = {
    "mongo": mongo_part,
    "inprocess": inprocess_part,
    "pipeline": pipeline_part,
    "pipeline_mongo": mongo_pipeline_part,
    "scale": scale_part,
    "ipn": ipn_part,
    "spot": spot_suite_part,
    "swap": swap_part,
    "p2p": p2p_part,
}


async def run_suite(config: SuiteConfig, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every part, on KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL if set, the embedded ones if not."""
    async with Infrastructure.from_environment(log_dir=config.log_dir) as infra:
        log.info("%s; %s", infra.kafka.describe(), infra.mongodb.describe())
        return await run_parts(infra, config, only)


def headline(parts: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue and the docs quote, each the median of its runs."""
    pipeline = parts.get("pipeline", {})
    largest = str(pipeline.get("largest_batch", ""))
    return {
        "pipeline_commands_per_s": _median(pipeline, "by_batch", largest, "commands_per_s"),
        "echo_commands_per_s": _median(pipeline, "echo", "commands_per_s"),
        "pipeline_efficiency": _median(pipeline, "efficiency"),
        "pipeline_mongo_commands_per_s": _median(parts.get("pipeline_mongo"), "commands_per_s"),
        "mongo_round_trips_per_command": _median(
            parts.get("mongo"), "ledger", "round_trips_per_command"
        ),
        "baseline_mongo_round_trips_per_command": _median(
            parts.get("mongo"), "baseline", "round_trips_per_command"
        ),
        "mongo_ledger_commands_per_s": _median(parts.get("mongo"), "ledger", "commands_per_s"),
        "baseline_commands_per_s": _median(parts.get("mongo"), "baseline", "commands_per_s"),
        "speedup_vs_baseline": _median(parts.get("mongo"), "speedup"),
        "modelled_speedup_vs_baseline": _median(parts.get("inprocess"), "speedup"),
        "scale_commands_per_s": {
            processes: _median(figure, "commands_per_s")
            for processes, figure in parts.get("scale", {}).items()
            if isinstance(figure, dict) and "commands_per_s" in figure
        },
        "ipn_answer_p99_ms": _median(parts.get("ipn"), "answer_p99_ms"),
        "ipn_to_balance_p99_ms": _median(parts.get("ipn"), "to_balance_p99_ms"),
        "spot_matcher_orders_per_s": (parts.get("spot") or {})
        .get("matcher_orders_per_s", {})
        .get("median"),
        "spot_end_to_end_orders_per_s": (parts.get("spot") or {})
        .get("end_to_end_orders_per_s", {})
        .get("median"),
        "swaps_per_s": (parts.get("swap") or {}).get("swaps_per_s"),
        "p2p_trades_per_s": (parts.get("p2p") or {}).get("trades_per_s"),
        "p2p_create_to_escrowed_p50_ms": (parts.get("p2p") or {}).get("create_to_escrowed_p50_ms"),
        "p2p_release_to_completed_p50_ms": (parts.get("p2p") or {}).get(
            "release_to_completed_p50_ms"
        ),
    }


async def run_parts(
    infra: Infrastructure, config: SuiteConfig, only: tuple[str, ...] | None = None
) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    for name, part in PARTS.items():
        if only is None or name in only:
            log.info("part %s", name)
            parts[name] = await part(infra, config, parts)
    reduced = {name: f["reduced"] for name, f in parts.items() if "reduced" in f}
    return {
        **headline(parts),
        "reduced": reduced,
        "machine": machine(),
        "infrastructure": {"kafka": infra.kafka.origin, "mongodb": infra.mongodb.origin},
        "runs": config.runs,
        **parts,
    }
