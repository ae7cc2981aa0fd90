"""Wiring: settings → adapters → handlers → the FastAPI app with its background tasks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from p2p.adapters.mongo import MongoOffers, MongoTrades, ensure_indexes
from p2p.adapters.wallet import WalletCommandPublisher
from p2p.application.offers import OfferHandler
from p2p.application.relay import OutboxRelay
from p2p.application.trades import TradeHandler, trade_id_of
from p2p.domain.trades import TRANSACTION_TYPES
from p2p.entrypoints.http import Handlers, include_routes
from p2p.settings import P2pSettings
from shared.background import BackgroundTasks
from shared.clock import to_the_millisecond
from shared.http import create_app
from shared.http.idempotency import MongoIdempotencyStore
from shared.messaging import CommandResult
from shared.mongo import MongoDeadLetters, connect
from shared.results_consumer import WalletResultsConsumer
from shared.wallet_client import WalletClient

log = structlog.get_logger(__name__)

# Results the service could not apply after their retries (shared.results_consumer).
DEAD_LETTERS: Final = "p2p_dead_letters"


def utc_now() -> datetime:
    return datetime.now(UTC)


def is_p2p_result(result: CommandResult) -> bool:
    return (
        result.transaction_type in TRANSACTION_TYPES
        and trade_id_of(result.reference_id) is not None
    )


@dataclass
class P2p:
    """The running parts of one P2P process (exposed for tests and health checks)."""

    settings: P2pSettings
    mongo: AsyncMongoClient[dict[str, Any]]
    wallet: WalletClient
    handlers: Handlers
    relay: OutboxRelay
    results: WalletResultsConsumer
    background: BackgroundTasks = field(default_factory=BackgroundTasks)
    started: bool = False

    async def ready(self) -> bool:
        if not (self.started and self.results.assigned):
            return False
        if self.results.stuck:
            log.error("results.stuck")
            return False
        await self.mongo.admin.command("ping")
        return True

    async def start(self) -> None:
        await ensure_indexes(self.mongo[self.settings.p2p_mongodb_database])
        await self.wallet.start()
        await self.results.start()
        # Whatever a previous run recorded but did not publish goes out first.
        await self.relay.run_once(grace=timedelta(0))
        settings = self.settings
        # At once: deadlines live in the database, so a restarted process sweeps what a stopped
        # one left.
        loops = (
            ("p2p-outbox-relay", settings.p2p_outbox_relay_interval_seconds, self.relay.run_once),
            (
                "p2p-deadline-sweeper",
                settings.p2p_sweep_interval_seconds,
                self.handlers.trades.expire_due,
            ),
            ("p2p-ask-again", settings.p2p_ask_again_after_seconds, self.relay.ask_again),
        )
        for name, interval, work in loops:
            self.background.every(
                name, interval, work, failure_event="p2p.background_failed", at_once=True
            )
        self.started = True

    async def stop(self) -> None:
        self.started = False
        await self.background.stop()
        await self.results.stop()
        await self.wallet.stop()
        await self.mongo.close()


def build_p2p(settings: P2pSettings, clock: Callable[[], datetime] = utc_now) -> P2p:
    clock = to_the_millisecond(clock)
    mongo = connect(settings.mongodb_url, serverSelectionTimeoutMS=5000)
    database = mongo[settings.p2p_mongodb_database]
    offers, trades = MongoOffers(database), MongoTrades(database)
    wallet = WalletClient(settings.kafka_bootstrap_servers, topics=settings.topics)
    publisher = WalletCommandPublisher(wallet)
    trade_handler = TradeHandler(
        trades=trades,
        offers=offers,
        publisher=publisher,
        fee_rate=settings.p2p_fee_rate,
        clock=clock,
        action_wait_seconds=settings.p2p_action_wait_seconds,
    )
    return P2p(
        settings=settings,
        mongo=mongo,
        wallet=wallet,
        handlers=Handlers(
            offers=OfferHandler(offers, clock),
            trades=trade_handler,
            idempotency=MongoIdempotencyStore(database),
        ),
        relay=OutboxRelay(
            trades,
            publisher,
            clock,
            ask_again_after=timedelta(seconds=settings.p2p_ask_again_after_seconds),
        ),
        results=WalletResultsConsumer(
            settings.kafka_bootstrap_servers,
            trade_handler.apply_result,
            is_p2p_result,
            # Every trade waiting on the wallet is asked again (`TradeHandler.ask_again`).
            asked_again=is_p2p_result,
            topic=settings.topics.results,
            group_id=settings.topics.group(settings.p2p_results_consumer_group),
            session_timeout_ms=settings.p2p_results_session_timeout_ms,
            heartbeat_interval_ms=settings.p2p_results_heartbeat_interval_ms,
            # A result the service cannot apply is kept for a person after a few tries instead
            # of holding its partition forever; a database outage is waited out (and reported
            # by /healthz as stuck), never dead-lettered.
            dead_letters=MongoDeadLetters(database, DEAD_LETTERS),
        ),
    )


def create_p2p_app(p2p: P2p) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await p2p.start()
        try:
            yield
        finally:
            await p2p.stop()

    app = create_app(
        title="p2p",
        auth_secret=p2p.settings.auth_jwt_secret,
        ready=p2p.ready,
        lifespan=lifespan,
    )
    include_routes(app, p2p.handlers)
    app.state.p2p = p2p
    return app
