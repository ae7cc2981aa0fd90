"""Composition root: ONE FastAPI app, ONE WalletClient, ONE Kafka producer, ONE MongoDB database
and ONE wallet.results consumer, shared by every feature of the trading service.

How a feature plugs in
----------------------
1. Write a factory ``build_<name>_feature(context: TradingContext) -> Feature`` in the feature's
   package (``trading/<name>/entrypoints.py`` or similar). It reads its own settings class from the
   environment (pydantic-settings), builds its adapters on ``context.database`` /
   ``context.wallet`` / ``context.publisher`` / ``context.prices``, and returns a `Feature`:
   - ``routers``: its APIRouters (routes under /api/...; admin routes check ``AdminUser``);
   - ``result_handlers``: ``{transaction_type: handler}`` for the wallet results it follows
     (send commands with ``wait=False`` and let the handler move your state: the result arrives
     once the wallet committed and published it; handlers must be idempotent);
   - ``start`` / ``stop``: async hooks for indexes and background tasks (started in list order
     before the results consumer joins, stopped in reverse order);
   - ``ready``: its part of ``/healthz`` (e.g. its own consumer assigned).
   Refusals: raise `trading.errors` (Invalid 422, NotFound 404, Conflict 409, Unavailable 503)
   with a stable code anywhere; they answer with the contract's error body.
2. Add the factory to `FEATURES` below: one line.

Tests build a service with their own settings, clock and feature list:
``build_service(settings, features=[partial(build_x_feature, settings=XSettings(...))], clock=...)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo import AsyncMongoClient

from shared.clock import to_the_millisecond
from shared.http import create_app, error_response
from shared.mongo import MongoDeadLetters, connect
from shared.wallet_client import WalletClient
from trading.conversions.entrypoints import build_conversions_feature
from trading.errors import TradingError
from trading.feature import Clock, Feature, FeatureFactory, TradingContext, utc_now
from trading.messaging import EventPublisher, ResultsConsumer, ResultsDispatcher
from trading.prices.domain import PriceBook
from trading.prices.entrypoints import build_prices_feature
from trading.referrals.entrypoints import build_referrals_feature
from trading.savings.entrypoints import build_savings_feature
from trading.settings import TradingSettings
from trading.spot.feature import build_spot_feature

log = structlog.get_logger(__name__)

# Results no feature could apply after their retries (shared.results_consumer).
DEAD_LETTERS: Final = "trading_dead_letters"

# Every feature of the service, in start order (prices first: quoting features read them).
FEATURES: Final[tuple[FeatureFactory, ...]] = (
    build_prices_feature,
    build_conversions_feature,
    build_spot_feature,
    build_savings_feature,
    build_referrals_feature,
)


@dataclass
class TradingService:
    """The running parts of one trading process (exposed for tests and health checks)."""

    settings: TradingSettings
    mongo: AsyncMongoClient[dict[str, Any]]
    context: TradingContext
    features: Sequence[Feature]
    results: ResultsConsumer
    started: bool = False

    async def ready(self) -> bool:
        if not (self.started and self.context.publisher.started and self.results.assigned):
            return False
        if self.results.stuck:
            log.error("results.stuck")
            return False
        await self.mongo.admin.command("ping")
        for feature in self.features:
            if not await feature.ready():
                return False
        return True

    async def start(self) -> None:
        await self.context.publisher.start()
        await self.context.wallet.start()
        for feature in self.features:
            await feature.start()
        # Last: a result may only arrive once every handler can apply it.
        await self.results.start()
        self.started = True
        log.info("trading.started", features=[f.name for f in self.features])

    async def stop(self) -> None:
        self.started = False
        await self.results.stop()
        for feature in reversed(self.features):
            try:
                await feature.stop()
            except Exception:
                log.exception("trading.feature_stop_failed", feature=feature.name)
        await self.context.wallet.stop()
        await self.context.publisher.stop()
        await self.mongo.close()


def build_service(
    settings: TradingSettings,
    *,
    features: Sequence[FeatureFactory] = FEATURES,
    clock: Clock = utc_now,
) -> TradingService:
    # Every instant a feature takes is as MongoDB keeps it: a create answers what a read shows.
    clock = to_the_millisecond(clock)
    mongo = connect(settings.mongodb_url, serverSelectionTimeoutMS=5000)
    context = TradingContext(
        settings=settings,
        database=mongo[settings.trading_mongodb_database],
        wallet=WalletClient(
            settings.kafka_bootstrap_servers,
            timeout=settings.wallet_result_timeout_seconds,
            topics=settings.topics,
        ),
        publisher=EventPublisher(settings.kafka_bootstrap_servers),
        prices=PriceBook(max_age=timedelta(seconds=settings.price_max_age_seconds)),
        clock=clock,
    )
    built = [factory(context) for factory in features]
    dispatcher = ResultsDispatcher()
    for feature in built:
        dispatcher.register(
            feature.result_handlers, owner=feature.name, asked_again=feature.asked_again
        )
    results = ResultsConsumer(
        settings.kafka_bootstrap_servers,
        dispatcher,
        topic=settings.topics.results,
        group_id=settings.topics.group(settings.results_consumer_group),
        session_timeout_ms=settings.results_session_timeout_ms,
        heartbeat_interval_ms=settings.results_heartbeat_interval_ms,
        # As in every service: a result no feature can apply is dead-lettered after a few tries.
        dead_letters=MongoDeadLetters(context.database, DEAD_LETTERS),
    )
    return TradingService(settings, mongo, context, built, results)


async def _trading_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TradingError)
    return error_response(exc.http_status, exc.code, exc.message)


def install_trading_errors(app: FastAPI) -> None:
    """Answer every `TradingError` with its status and the contract's error body."""
    app.add_exception_handler(TradingError, _trading_error)


def create_trading_app(service: TradingService) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = create_app(
        title="trading",
        auth_secret=service.settings.auth_jwt_secret,
        ready=service.ready,
        lifespan=lifespan,
    )
    install_trading_errors(app)
    for feature in service.features:
        for router in feature.routers:
            app.include_router(router)
    app.state.service = service
    return app
