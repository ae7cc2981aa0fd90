"""HTTP routes of referrals and the feature factory (its own wallet.events consumer group, and
the loop that asks the wallet again about commissions whose result never came)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared.background import BackgroundTasks
from shared.http import CurrentUser, TextCheckedRoute, error_responses
from trading.feature import Feature, TradingContext, of_types
from trading.ledger_events import LedgerEventsConsumer
from trading.referrals.adapters.mongo import MongoBindings, MongoCommissions, ensure_indexes
from trading.referrals.application.service import ReferralService
from trading.referrals.domain.commissions import COMMISSION_TRANSACTION_TYPE
from trading.referrals.settings import ReferralSettings


class BindRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    referrer_id: JsonValue = Field(description="the user who invited the caller", examples=["u42"])


class BindingView(BaseModel):
    user_id: str
    referrer_id: str
    bound_at: datetime


class Earned(BaseModel):
    currency: str
    amount: str


class Summary(BaseModel):
    referrer_id: str | None = Field(description="whom the caller is bound to")
    invitees: int = Field(description="users bound to the caller")
    earned: list[Earned] = Field(description="commissions paid to the caller, per currency")


def referral_routes(service: ReferralService) -> APIRouter:
    router = APIRouter(route_class=TextCheckedRoute, tags=["referrals"])

    @router.post(
        "/api/referrals/bind",
        response_model=BindingView,
        responses=error_responses(400, 401, 409, 422),
    )
    async def bind(body: BindRequest, user: CurrentUser) -> BindingView:
        """Bind the caller (the invitee) to their referrer, once and for good. 400:
        self_referral, invalid_referrer; 409: already_bound. Fees count from `bound_at` on, an
        instant at which the binding was stored."""
        binding = await service.bind(user.user_id, body.referrer_id)
        return BindingView(
            user_id=binding.invitee_id, referrer_id=binding.referrer_id, bound_at=binding.bound_at
        )

    @router.get("/api/referrals/summary", response_model=Summary, responses=error_responses(401))
    async def summary(user: CurrentUser) -> Summary:
        """The caller's referrer, how many users they invited and what those earned them."""
        return Summary.model_validate(await service.summary(user.user_id))

    return router


def build_referrals_feature(
    context: TradingContext, settings: ReferralSettings | None = None
) -> Feature:
    settings = settings or ReferralSettings()
    service = ReferralService(
        bindings=MongoBindings(context.database, context.clock),
        commissions=MongoCommissions(context.database),
        wallet=context.wallet,
        rate=settings.referral_commission_rate,
        clock=context.clock,
    )
    events = LedgerEventsConsumer(
        context.settings.kafka_bootstrap_servers,
        service.on_ledger_transaction,
        topic=context.settings.topics.events,
        # Namespaced like the topics: deployments (and test modules) sharing a broker stay apart.
        group_id=context.settings.topics.group(settings.referral_events_consumer_group),
        session_timeout_ms=context.settings.results_session_timeout_ms,
        heartbeat_interval_ms=context.settings.results_heartbeat_interval_ms,
    )

    ask_again_after = timedelta(seconds=settings.referral_ask_again_after_seconds)
    background = BackgroundTasks()

    async def ask_again() -> None:
        await service.ask_again(ask_again_after)

    async def start() -> None:
        await ensure_indexes(context.database)
        await events.start()
        background.every(
            "referrals-ask-again",
            context.settings.outbox_relay_interval_seconds,
            ask_again,
            failure_event="referrals.ask_again_failed",
        )

    async def stop() -> None:
        await background.stop()
        await events.stop()

    async def ready() -> bool:
        return events.assigned and background.alive()

    return Feature(
        name="referrals",
        routers=[referral_routes(service)],
        result_handlers={COMMISSION_TRANSACTION_TYPE: service.on_commission_result},
        asked_again=of_types(COMMISSION_TRANSACTION_TYPE),  # pending ones are asked again
        start=start,
        stop=stop,
        ready=ready,
    )
