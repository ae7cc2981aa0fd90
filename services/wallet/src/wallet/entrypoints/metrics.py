"""Prometheus metrics of the wallet: what it applied, refused and dead-lettered, and how fast."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from wallet.application.command_intake import IntakeReport


class WalletMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = Counter(
            "wallet_commands_total",
            "Wallet commands by outcome (applied, duplicate, rejected, dead_lettered)",
            ["status"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "wallet_batch_size",
            "Commands per consumed batch",
            buckets=(1, 5, 10, 50, 100, 200, 500, 1000),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "wallet_batch_seconds",
            "Time to decide, commit and publish one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.broker_wait_seconds = Histogram(
            "wallet_broker_wait_seconds",
            "Time the command loop waited, per batch, for the broker's acknowledgements of the"
            " previous batch and for its offset commit, after deciding the next one",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=registry,
        )
        self.batch_retries = Counter(
            "wallet_batch_retries_total",
            "Batches decided again after a conflict",
            registry=registry,
        )
        self.batch_failures = Counter(
            "wallet_batch_failures_total",
            "Batches that failed and will be redelivered",
            registry=registry,
        )

    def observe(self, report: IntakeReport) -> None:
        for status in ("applied", "duplicate", "rejected"):
            self.commands.labels(status).inc(report.batch.count(status))
        self.commands.labels("dead_lettered").inc(len(report.dead_letters))
        self.batch_size.observe(report.received)
        self.batch_seconds.observe(report.seconds)
        self.batch_retries.inc(report.batch.attempts - 1)
