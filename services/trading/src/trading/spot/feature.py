"""The spot trading feature: its routes, the matcher consumer, the lock relay and the handlers of
spot_order / spot_trade results."""

from __future__ import annotations

from datetime import timedelta

from shared.background import BackgroundTasks
from trading.feature import Feature, TradingContext, of_types
from trading.spot.adapters.mongo import MongoSpotStore
from trading.spot.api import spot_routes
from trading.spot.domain.markets import Market
from trading.spot.matcher import MarketMatcher, MatcherConsumer
from trading.spot.orders import SPOT_ORDER, SPOT_TRADE
from trading.spot.service import SpotOrders
from trading.spot.settings import SpotSettings
from trading.spot.wallet import SpotWallet


def build_spot_feature(context: TradingContext, settings: SpotSettings | None = None) -> Feature:
    settings = settings or SpotSettings()
    store = MongoSpotStore(context.database)
    wallet = SpotWallet(context.wallet, settle_wait_seconds=settings.spot_settle_wait_seconds)
    fees = settings.fees()
    topic = context.settings.topics.orders
    orders = SpotOrders(
        store,
        wallet,
        context.publisher,
        topic,
        fees,
        context.clock,
        market_buy_margin=settings.spot_market_buy_margin,
        cancel_wait_seconds=settings.spot_cancel_wait_seconds,
        max_open_per_user=settings.spot_max_open_orders_per_user,
    )

    def make_matcher(market: Market) -> MarketMatcher:
        return MarketMatcher(
            market, fees, store, wallet, context.clock, levels=settings.spot_book_levels
        )

    matcher = MatcherConsumer(
        context.settings.kafka_bootstrap_servers,
        topic,
        make_matcher,
        group_id=context.settings.topics.group(settings.spot_matcher_group),
        batch_size=settings.spot_matcher_batch_size,
        resend_every=settings.spot_unconfirmed_resend_seconds,
        session_timeout_ms=settings.spot_matcher_session_timeout_ms,
        heartbeat_interval_ms=settings.spot_matcher_heartbeat_interval_ms,
    )
    interval = context.settings.outbox_relay_interval_seconds
    resend_after = timedelta(seconds=settings.spot_lock_resend_after_seconds)
    cancel_again_after = timedelta(seconds=settings.spot_expiry_cancel_again_after_seconds)
    background = BackgroundTasks()

    async def relay() -> None:
        await orders.resend_locks(grace=resend_after)
        await orders.expire(again_after=cancel_again_after)

    async def start() -> None:
        await store.ensure_indexes()
        await matcher.start()
        background.every("spot-lock-relay", interval, relay, failure_event="spot.relay_failed")

    async def stop() -> None:
        await background.stop()
        await matcher.stop()

    async def ready() -> bool:
        return matcher.ready and background.alive()

    return Feature(
        name="spot",
        routers=[spot_routes(orders)],
        result_handlers={SPOT_ORDER: orders.apply_result, SPOT_TRADE: orders.apply_result},
        # Every command spot sends is sent again while its record waits: an order's lock by the
        # relay (`resend_locks`), a batch's settlements and unlocks by the matcher's resend pass
        # (`MarketMatcher.resend_unconfirmed`). A not-final answer read here is no answer.
        asked_again=of_types(SPOT_ORDER, SPOT_TRADE),
        start=start,
        stop=stop,
        ready=ready,
    )
