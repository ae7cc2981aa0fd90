"""Wires the wallet: store, broker, intake, HTTP app. The one place that knows every concrete class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from shared.http import (
    configure_auth,
    health_router,
    install_error_handlers,
    limit_request_bodies,
    metrics_router,
)
from shared.logging import get_logger
from shared.mongo import connect
from shared.recent_messages import RecentMessagesReader
from wallet.adapters.kafka_publisher import KafkaOutcomePublisher
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.command_intake import CommandIntake
from wallet.application.ledger_service import LedgerService
from wallet.application.ports import LedgerStore
from wallet.application.prices import PriceBook
from wallet.entrypoints.consumer import AssignmentTracker, CommandLoop, describe_command_channel
from wallet.entrypoints.http import router as wallet_router
from wallet.entrypoints.metrics import WalletMetrics
from wallet.entrypoints.portfolio_api import router as portfolio_router
from wallet.entrypoints.prices_consumer import describe_prices_channel, prices_reader
from wallet.entrypoints.web import install_pages
from wallet.settings import WalletSettings

log = get_logger(__name__)


@dataclass
class WalletRuntime:
    settings: WalletSettings
    store: LedgerStore
    mongo: AsyncMongoClient[dict[str, object]] | None
    # The prices read model (market.prices) and the reader that feeds it.
    prices: PriceBook
    prices_reader: RecentMessagesReader
    commands: CommandLoop
    registry: CollectorRegistry
    publisher: KafkaOutcomePublisher
    # Never started: it only describes the Kafka side for the AsyncAPI document.
    described: KafkaBroker

    @property
    def tracker(self) -> AssignmentTracker:
        return self.commands.tracker

    async def start(self) -> None:
        ensure_indexes = getattr(self.store, "ensure_indexes", None)
        if ensure_indexes is not None:
            await ensure_indexes()
        await self.publisher.start()  # before the consumer: its first batch publishes
        await self.prices_reader.start()
        await self.commands.start()
        log.info("wallet_started", store=self.settings.store)

    async def stop(self) -> None:
        await self.commands.stop()  # its batch in flight is published and committed first
        await self.prices_reader.stop()
        await self.publisher.stop()
        if self.mongo is not None:
            await self.mongo.close()

    async def ready(self) -> bool:
        # Not only before the first join: after a revocation that left it no partition (a
        # rebalance in progress, or more consumers than partitions) this process applies nothing.
        if not self.tracker.partitions:
            return False
        if self.mongo is not None:
            await self.mongo.admin.command("ping")
        return True


def build_runtime(settings: WalletSettings) -> WalletRuntime:
    mongo: AsyncMongoClient[dict[str, object]] | None = None
    store: LedgerStore
    if settings.store == "memory":
        store = InMemoryLedgerStore()
    else:
        from wallet.adapters.mongo_store import MongoLedgerStore

        mongo = connect(settings.mongodb_url)
        store = MongoLedgerStore(mongo[settings.mongodb_database])
    prices = PriceBook()
    reader = prices_reader(
        settings.kafka_bootstrap_servers,
        prices,
        settings.topics,
        lookback=settings.price_topic_lookback,
    )
    described = KafkaBroker(settings.kafka_bootstrap_servers)
    describe_command_channel(described, settings.topics)
    describe_prices_channel(described, settings.topics)
    registry = CollectorRegistry()
    metrics = WalletMetrics(registry)
    publisher = KafkaOutcomePublisher(described, settings.topics, settings.kafka_bootstrap_servers)
    commands = CommandLoop(
        CommandIntake(LedgerService(store), publisher),
        metrics,
        settings.topics,
        settings.kafka_bootstrap_servers,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
    )
    return WalletRuntime(
        settings, store, mongo, prices, reader, commands, registry, publisher, described
    )


def build_http_app(runtime: WalletRuntime, **fastapi_options: Any) -> FastAPI:
    """The HTTP API over a runtime: read routes, /healthz, /metrics, OpenAPI at /docs."""
    app = FastAPI(
        title="Wallet service",
        version="0.1.0",
        description="Balances and history of the exchange's wallets; the ledger behind them.",
        **fastapi_options,
    )
    install_error_handlers(app)
    limit_request_bodies(app)
    configure_auth(app, runtime.settings.auth_jwt_secret)
    app.include_router(health_router(runtime.ready))
    app.include_router(metrics_router(runtime.registry))
    app.include_router(wallet_router)
    app.include_router(portfolio_router)
    install_pages(app)
    asyncapi = AsyncAPI(
        runtime.described,
        title="Wallet service",
        description="Consumes wallet.commands; publishes wallet.results, wallet.events and the DLQ.",
    ).to_specification()

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_document() -> JSONResponse:
        """The AsyncAPI document of the wallet's Kafka side."""
        return JSONResponse(asyncapi.to_jsonable())

    app.state.store = runtime.store
    app.state.prices = runtime.prices
    app.state.runtime = runtime
    return app


def create_app(settings: WalletSettings | None = None) -> FastAPI:
    """The wallet process: the Kafka consumer runs inside the HTTP app's lifespan."""
    runtime = build_runtime(settings or WalletSettings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    return build_http_app(runtime, lifespan=lifespan)
