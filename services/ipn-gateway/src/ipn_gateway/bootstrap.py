"""Wiring: settings → adapters → handlers → the FastAPI app with its background tasks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from ipn_gateway.adapters.mongo import (
    DEAD_LETTERS,
    MongoDepositOrders,
    MongoIpnLog,
    MongoPayments,
    MongoReviews,
    MongoWithdrawals,
    ensure_indexes,
)
from ipn_gateway.adapters.nowpayments import NowPaymentsClient
from ipn_gateway.adapters.wallet import WalletCommandPublisher
from ipn_gateway.application.credits import UnansweredCredits
from ipn_gateway.application.deposits import DepositHandler
from ipn_gateway.application.ipn import IpnHandler
from ipn_gateway.application.poller import MissedIpnPoller
from ipn_gateway.application.rate_limit import RateLimiter
from ipn_gateway.application.relay import OutboxRelay, ResultsDispatcher
from ipn_gateway.application.reviews import ReviewHandler
from ipn_gateway.application.withdrawals import WithdrawalHandler
from ipn_gateway.entrypoints.http import Handlers, include_routes
from ipn_gateway.entrypoints.results import ResultsConsumer
from ipn_gateway.settings import GatewaySettings
from shared.background import BackgroundTasks
from shared.clock import to_the_millisecond
from shared.http import create_app
from shared.http.idempotency import MongoIdempotencyStore
from shared.mongo import MongoDeadLetters, connect
from shared.wallet_client import WalletClient

log = structlog.get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Gateway:
    """The running parts of one gateway process (exposed for tests and health checks)."""

    settings: GatewaySettings
    mongo: AsyncMongoClient[dict[str, Any]]
    wallet: WalletClient
    http: httpx.AsyncClient
    handlers: Handlers
    relay: OutboxRelay
    credits: UnansweredCredits
    results: ResultsConsumer
    ipn_log: MongoIpnLog
    poller: MissedIpnPoller | None = None
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
        await ensure_indexes(self.mongo[self.settings.ipn_gateway_mongodb_database])
        await self.wallet.start()
        await self.results.start()
        # Whatever a previous run recorded but did not publish goes out first.
        await self.relay.run_once(grace=timedelta(0))
        settings = self.settings
        self.background.every(
            "outbox-relay",
            settings.outbox_relay_interval_seconds,
            self.relay.run_once,
            failure_event="outbox.relay_failed",
        )
        self.background.every(
            "withdrawal-ask-again",
            settings.withdrawal_ask_again_after_seconds,
            self.handlers.withdrawals.ask_again,
            failure_event="withdrawal.ask_again_failed",
        )
        self.background.every(
            "credit-ask-again",
            settings.deposit_credit_ask_again_after_seconds,
            self.credits.ask_again,
            failure_event="payment.ask_again_failed",
        )
        if self.poller is not None:
            self.background.every(
                "missed-ipn-poller",
                min(settings.nowpayments_poll_interval_seconds, 60.0),
                self.poller.run_once,
                failure_event="poll.failed",
                at_once=True,
            )
        self.started = True

    async def stop(self) -> None:
        self.started = False
        await self.background.stop()
        await self.results.stop()
        await self.wallet.stop()
        await self.http.aclose()
        await self.mongo.close()


def build_gateway(settings: GatewaySettings, clock: Callable[[], datetime] = utc_now) -> Gateway:
    # Every instant a handler takes is as MongoDB keeps it: a create answers what a read shows.
    clock = to_the_millisecond(clock)
    mongo = connect(settings.mongodb_url, serverSelectionTimeoutMS=5000)
    database = mongo[settings.ipn_gateway_mongodb_database]
    orders, payments = MongoDepositOrders(database), MongoPayments(database)
    ipn_log, withdrawals = MongoIpnLog(database), MongoWithdrawals(database)
    reviews = MongoReviews(database)
    wallet = WalletClient(settings.kafka_bootstrap_servers, topics=settings.topics)
    publisher = WalletCommandPublisher(wallet)
    http = httpx.AsyncClient(
        base_url=settings.nowpayments_api_url,
        timeout=httpx.Timeout(settings.nowpayments_timeout_seconds, connect=3.0),
    )
    withdrawal_handler = WithdrawalHandler(
        withdrawals=withdrawals,
        publisher=publisher,
        policy=settings.withdrawal_policy(),
        clock=clock,
        decision_wait_seconds=settings.withdrawal_decision_wait_seconds,
        ask_again_after=timedelta(seconds=settings.withdrawal_ask_again_after_seconds),
    )
    ipn_handler = IpnHandler(
        secret=settings.nowpayments_ipn_secret.get_secret_value(),
        policy=settings.confirmation_policy(),
        orders=orders,
        payments=payments,
        ipn_log=ipn_log,
        publisher=publisher,
        clock=clock,
        reviews=reviews,
        allowed_networks=settings.allowed_networks(),
        untrusted_limit=RateLimiter(
            per_sender=settings.nowpayments_ipn_untrusted_per_sender_per_minute,
            overall=settings.nowpayments_ipn_untrusted_per_minute,
            window=timedelta(minutes=1),
            clock=clock,
        ),
    )
    provider = NowPaymentsClient(http, settings.nowpayments_api_key.get_secret_value())
    handlers = Handlers(
        ipn=ipn_handler,
        deposits=DepositHandler(
            orders=orders,
            provider=provider,
            ipn_callback_url=settings.ipn_callback_url,
            clock=clock,
        ),
        withdrawals=withdrawal_handler,
        reviews=ReviewHandler(reviews, payments, publisher, clock, orders),
        trusted_proxies=settings.trusted_proxies(),
        idempotency=MongoIdempotencyStore(database),
    )
    poller = None
    if settings.nowpayments_poll_after_seconds > 0:
        poller = MissedIpnPoller(
            orders=orders,
            provider=provider,
            ipn=ipn_handler,
            clock=clock,
            older_than=timedelta(seconds=settings.nowpayments_poll_after_seconds),
            every=timedelta(seconds=settings.nowpayments_poll_interval_seconds),
        )
    dispatcher = ResultsDispatcher(withdrawals=withdrawal_handler, payments=payments)
    return Gateway(
        settings=settings,
        mongo=mongo,
        wallet=wallet,
        http=http,
        handlers=handlers,
        relay=OutboxRelay([payments, withdrawals, reviews], publisher, clock),
        credits=UnansweredCredits(
            payments,
            publisher,
            clock,
            ask_again_after=timedelta(seconds=settings.deposit_credit_ask_again_after_seconds),
        ),
        results=ResultsConsumer(
            settings.kafka_bootstrap_servers,
            dispatcher.dispatch,
            topic=settings.topics.results,
            group_id=settings.topics.group(settings.results_consumer_group),
            dead_letters=MongoDeadLetters(database, DEAD_LETTERS),
            session_timeout_ms=settings.results_session_timeout_ms,
            heartbeat_interval_ms=settings.results_heartbeat_interval_ms,
            max_attempts=settings.results_max_attempts,
            stuck_after_seconds=settings.results_stuck_after_seconds,
        ),
        ipn_log=ipn_log,
        poller=poller,
    )


def create_gateway_app(gateway: Gateway) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = create_app(
        title="ipn-gateway",
        auth_secret=gateway.settings.auth_jwt_secret,
        ready=gateway.ready,
        lifespan=lifespan,
    )
    include_routes(app, gateway.handlers)
    app.state.gateway = gateway
    return app
