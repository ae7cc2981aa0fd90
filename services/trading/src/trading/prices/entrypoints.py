"""HTTP routes of prices and the feature factory (feed task + market.prices reader)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import httpx
import structlog
from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from shared.background import BackgroundTasks
from shared.http import AdminUser, ApiError, TextCheckedRoute, error_responses
from shared.money import MoneyError, format_amount, get_currency, parse_decimal
from shared.recent_messages import RecentMessagesReader
from trading.feature import Feature, TradingContext
from trading.prices.adapters.builtin import BuiltinPriceSource
from trading.prices.adapters.kafka import KafkaPricePublisher, PriceBookUpdater
from trading.prices.adapters.market_data import BinancePriceSource, CoinGeckoPriceSource
from trading.prices.adapters.mongo import MongoPins
from trading.prices.application import PriceFeed, PriceSource
from trading.prices.domain import (
    VALUATION_CURRENCY,
    Price,
    PriceBook,
    RandomWalk,
    pin_refusal,
)
from trading.prices.settings import PriceSettings

log = structlog.get_logger(__name__)


class PriceView(BaseModel):
    currency: str = Field(examples=["BTC"])
    price: str = Field(description="GBP per 1 unit, decimal string", examples=["52012.34"])
    as_of: datetime
    source: str = Field(examples=["builtin"])

    @classmethod
    def of(cls, price: Price) -> PriceView:
        return cls(
            currency=price.currency,
            price=format_amount(price.price),
            as_of=price.as_of,
            source=price.source,
        )


class PriceList(BaseModel):
    valuation_currency: str = VALUATION_CURRENCY
    as_of: datetime = Field(description="the newest market price's as_of")
    prices: list[PriceView]


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    currency: str = Field(examples=["BTC"])
    price: str = Field(description="GBP, decimal string", examples=["50000.00"])


class Unpinned(BaseModel):
    currency: str
    pinned: bool = False
    price: PriceView | None = Field(description="the source's price published in its place")


def _pinnable(raw: str) -> str:
    try:
        code = get_currency(raw).code
    except MoneyError as error:
        raise ApiError(422, error.code, error.message) from None
    if code == VALUATION_CURRENCY:
        raise ApiError(422, "valuation_currency", f"{VALUATION_CURRENCY} is always 1")
    return code


def price_routes(book: PriceBook, clock: Callable[[], datetime]) -> APIRouter:
    router = APIRouter(route_class=TextCheckedRoute, tags=["prices"])

    @router.get("/api/prices", response_model=PriceList)
    async def list_prices() -> PriceList:
        """The latest fresh price of every priced currency in GBP (stale ones are left out)."""
        now = clock()
        prices = book.current_prices(now)
        # The newest market price; GBP's own "1" is as of now and would hide an idle feed.
        market = [p.as_of for p in prices if p.currency != VALUATION_CURRENCY]
        return PriceList(
            as_of=max(market, default=now),
            prices=[PriceView.of(p) for p in prices],
        )

    return router


def pin_routes(feed: PriceFeed) -> APIRouter:
    """Staging only: the composition mounts these only when IS_STAGING=true (404 otherwise)."""
    router = APIRouter(route_class=TextCheckedRoute, tags=["prices (staging)"])

    @router.put(
        "/api/admin/prices",
        response_model=PriceView,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    async def pin_price(body: PinRequest, admin: AdminUser) -> PriceView:
        """Pin a price: the feed publishes this value from now on, until unpinned."""
        currency = _pinnable(body.currency)
        try:
            value = parse_decimal(body.price)
        except MoneyError as error:
            raise ApiError(422, error.code, error.message) from None
        refusal = pin_refusal(value)
        if refusal is not None:
            raise ApiError(422, *refusal)
        return PriceView.of(await feed.pin(currency, value, admin.user_id))

    @router.delete(
        "/api/admin/prices/{currency}",
        response_model=Unpinned,
        responses=error_responses(401, 403, 404, 422),
    )
    async def unpin_price(
        currency: Annotated[str, Path(examples=["BTC"])], admin: AdminUser
    ) -> Unpinned:
        """Unpin: the source's price is published again at once (also when nothing was pinned)."""
        restored = await feed.unpin(_pinnable(currency))
        return Unpinned(
            currency=currency.upper(), price=PriceView.of(restored) if restored else None
        )

    return router


def _source(
    settings: PriceSettings, context: TradingContext
) -> tuple[PriceSource, httpx.AsyncClient | None]:
    timeout = httpx.Timeout(settings.price_source_timeout_seconds, connect=3.0)
    if settings.price_source == "coingecko":
        http = httpx.AsyncClient(base_url=settings.coingecko_api_url, timeout=timeout)
        return CoinGeckoPriceSource(http, context.clock), http
    if settings.price_source == "binance":
        http = httpx.AsyncClient(base_url=settings.binance_api_url, timeout=timeout)
        return BinancePriceSource(http, context.clock), http
    return BuiltinPriceSource(RandomWalk(settings.price_feed_seed), context.clock), None


def build_prices_feature(context: TradingContext, settings: PriceSettings | None = None) -> Feature:
    settings = settings or PriceSettings()
    source, http = _source(settings, context)
    feed = PriceFeed(
        source=source,
        publisher=KafkaPricePublisher(context.publisher, context.settings.topics.prices),
        pins=MongoPins(context.database),
        book=context.prices,
        clock=context.clock,
    )
    reader = RecentMessagesReader(
        context.settings.kafka_bootstrap_servers,
        context.settings.topics.prices,
        PriceBookUpdater(context.prices, context.clock),
        lookback=settings.price_topic_lookback,
    )
    background = BackgroundTasks()

    async def start() -> None:
        builtin = settings.price_feed_enabled and settings.price_source is None
        if builtin and not context.settings.is_staging:
            # The contract lets the built-in walk run anywhere, so this is said, not refused: its
            # seed and start are public, so anyone can compute the prices it will quote.
            log.error("prices.builtin_feed_in_production", seed=settings.price_feed_seed)
        await reader.start()
        if settings.price_feed_enabled:
            await feed.tick()  # prices at once, before /healthz turns green
            # A failed tick (a MongoDB or broker blip) is logged and the next one comes as
            # usual: a feed that ended would leave every quote without a price until a restart.
            background.every(
                "price-feed",
                settings.price_feed_interval_seconds,
                feed.tick,
                failure_event="prices.feed_failed",
            )

    async def stop() -> None:
        await background.stop()
        await reader.stop()
        if http is not None:
            await http.aclose()

    async def ready() -> bool:
        return reader.running and background.alive()

    routers = [price_routes(context.prices, context.clock)]
    if context.settings.is_staging:
        routers.append(pin_routes(feed))
    return Feature(name="prices", routers=routers, start=start, stop=stop, ready=ready)
