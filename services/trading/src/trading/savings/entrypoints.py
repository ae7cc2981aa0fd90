"""HTTP routes of savings and the feature factory (history consumer, scheduler, resend loop)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared.background import BackgroundTasks
from shared.http import AdminUser, CurrentUser, TextCheckedRoute, error_responses
from shared.http.idempotency import (
    Idempotency,
    IdempotencyKey,
    IdempotencyStore,
    MemoryIdempotencyStore,
    MongoIdempotencyStore,
    idempotency_responses,
)
from shared.money import format_amount
from trading.errors import TradingError
from trading.feature import Feature, TradingContext, of_types
from trading.ledger_events import LedgerEventsConsumer
from trading.savings.adapters.mongo import (
    MongoAccruals,
    MongoSavingsHistory,
    MongoTransfers,
    ensure_indexes,
)
from trading.savings.application.scheduler import AccrualScheduler
from trading.savings.application.service import SavingsService
from trading.savings.domain.accrual import INTEREST_TRANSACTION_TYPE, parse_accrual_date
from trading.savings.domain.transfers import DEPOSIT_TRANSACTION_TYPE, WITHDRAWAL_TRANSACTION_TYPE
from trading.savings.settings import SavingsSettings


class _Body(BaseModel):
    # Unknown fields (status, user_id, …) are refused: no mass assignment.
    model_config = ConfigDict(extra="forbid")


class TransferRequest(_Body):
    currency: str = Field(examples=["USDT"])
    amount: JsonValue = Field(description="decimal string", examples=["100"])
    direction: JsonValue = Field(description="to_savings | to_wallet", examples=["to_savings"])


class AccrueRequest(_Body):
    date: JsonValue = Field(
        description="the UTC day to accrue, YYYY-MM-DD", examples=["2026-11-29"]
    )


class Product(BaseModel):
    currency: str = Field(examples=["USDT"])
    apr: str = Field(description="annual rate as a fraction, decimal string", examples=["0.05"])


class Products(BaseModel):
    items: list[Product]


class Transfer(BaseModel):
    transfer_id: str
    status: Literal["pending", "completed", "failed"]
    reason: str | None = Field(None, description="why it failed (the wallet's reason)")
    currency: str
    amount: str
    direction: Literal["to_savings", "to_wallet"]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, transfer: dict[str, Any]) -> Transfer:
        return cls(
            transfer_id=transfer["transfer_id"],
            status=transfer["status"],
            reason=transfer.get("reason"),
            currency=transfer["currency"],
            amount=format_amount(transfer["amount"]),
            direction=transfer["direction"],
            created_at=transfer["created_at"],
            updated_at=transfer["updated_at"],
        )


class Position(BaseModel):
    currency: str
    savings_balance: str
    interest_earned: str


class Positions(BaseModel):
    items: list[Position]


class AccrualItem(BaseModel):
    currency: str
    apr: str
    accounts_owed: int = Field(description="users with interest above zero for the day")
    paid: int = Field(description="payments this run made")
    paid_amount: str = Field(description="their sum")
    already_settled: int = Field(description="payments an earlier run made (or saw refused)")
    pending: int = Field(description="payments without a wallet result yet (a rerun resends)")
    failed: int
    unsendable: int = Field(
        0,
        description="payments whose credit cannot be built from what is stored (logged as "
        "savings.interest_unsendable; they stay pending and a rerun names them again)",
    )
    claimed_earlier: int = Field(
        0,
        description="payments an interrupted run of the day claimed that the balances of the run "
        "completing it no longer owe (the saver took savings out since): counted in "
        "accounts_owed and sent with the figures they were claimed with",
    )


class AccrualReport(BaseModel):
    date: str
    balances_at: datetime = Field(description="the instant whose savings balances were paid on")
    items: list[AccrualItem]


def savings_routes(
    service: SavingsService, idempotency: IdempotencyStore | None = None
) -> APIRouter:
    router = APIRouter(route_class=TextCheckedRoute, tags=["savings"])
    once = Idempotency(
        idempotency or MemoryIdempotencyStore(),
        "trading:POST /api/savings/transfer",
        (TradingError,),
    )

    @router.get("/api/savings/products", response_model=Products, responses=error_responses(401))
    async def products(_: CurrentUser) -> Products:
        """One product per currency with its APR (configured by SAVINGS_APR)."""
        return Products(items=[Product(**p.as_json()) for p in service.products()])

    @router.post(
        "/api/savings/transfer",
        status_code=202,
        response_model=Transfer,
        responses={**error_responses(400, 401, 422), **idempotency_responses()},
    )
    async def transfer(
        body: TransferRequest, user: CurrentUser, key: IdempotencyKey
    ) -> Transfer | JSONResponse:
        """Move money between the caller's available balance and savings; the status follows the
        wallet (pending → completed | failed). 400: unknown_currency, invalid amounts
        (amount_not_a_string, amount_malformed, amount_not_positive, amount_too_precise, …),
        invalid_direction, no_savings_product (into savings only). With an `Idempotency-Key`, a
        repeat gets the first answer and moves nothing; the key names the transfer, so a key
        used before for other figures is 409 idempotency_conflict (see
        docs/contract-extensions.md)."""

        async def work() -> Transfer:
            created = await service.request_transfer(
                user.user_id,
                body.currency,
                body.amount,
                body.direction,
                named_id=once.named_id(user, key),
            )
            return Transfer.of(created)

        return await once.run(user, key, work, status_code=202)

    @router.get(
        "/api/savings/transfers/{transfer_id}",
        response_model=Transfer,
        responses=error_responses(401, 404, 422),
    )
    async def get_transfer(
        transfer_id: Annotated[str, Path(min_length=1, max_length=64)], user: CurrentUser
    ) -> Transfer:
        """A transfer of the caller (admins: anyone's); 404 transfer_not_found otherwise."""
        found = await service.transfer(transfer_id, user.user_id, is_admin=user.is_admin)
        return Transfer.of(found)

    @router.get("/api/savings/positions", response_model=Positions, responses=error_responses(401))
    async def positions(user: CurrentUser) -> Positions:
        """The caller's savings per currency, with the interest it has earned."""
        return Positions(items=[Position(**p) for p in await service.positions(user.user_id)])

    @router.post(
        "/api/admin/savings/accrue",
        response_model=AccrualReport,
        responses=error_responses(400, 401, 403, 422, 503),
    )
    async def accrue(body: AccrueRequest, _: AdminUser) -> AccrualReport:
        """Accrue one day's interest (ops backfill). A past day pays on the balances at its end,
        today on those at this moment; a payment already made is never made again, and once a
        run of the day completed, a run again only resends the payments whose result was lost
        or that the wallet failed on without recording an outcome (today too: savers who
        started later are not paid for it). 400: invalid_date,
        date_in_future; 503: ledger_history_behind (retry)."""
        report = await service.accrue(parse_accrual_date(body.date))
        return AccrualReport.model_validate(report)

    return router


def build_savings_feature(
    context: TradingContext, settings: SavingsSettings | None = None
) -> Feature:
    settings = settings or SavingsSettings()
    history = MongoSavingsHistory(context.database)
    events = LedgerEventsConsumer(
        context.settings.kafka_bootstrap_servers,
        history.record_transaction,
        topic=context.settings.topics.events,
        # Namespaced like the topics: deployments (and test modules) sharing a broker stay apart.
        group_id=context.settings.topics.group(settings.savings_history_consumer_group),
        session_timeout_ms=context.settings.results_session_timeout_ms,
        heartbeat_interval_ms=context.settings.results_heartbeat_interval_ms,
    )

    async def history_caught_up() -> bool:
        return await events.caught_up(settings.savings_history_catch_up_seconds)

    idempotency = MongoIdempotencyStore(context.database)
    service = SavingsService(
        transfers=MongoTransfers(context.database),
        history=history,
        accruals=MongoAccruals(context.database),
        wallet=context.wallet,
        aprs=settings.savings_apr,
        clock=context.clock,
        history_caught_up=history_caught_up,
        result_timeout=context.settings.wallet_result_timeout_seconds,
    )
    scheduler = AccrualScheduler(
        service.accrue,
        clock=context.clock,
        delay=timedelta(seconds=settings.savings_accrual_delay_seconds),
        lookback_days=settings.savings_accrual_lookback_days,
        newest_completed=service.newest_completed_days,
    )
    background = BackgroundTasks()

    async def resend() -> None:
        await service.resend_pending(
            timedelta(seconds=settings.savings_transfer_resend_after_seconds)
        )

    async def start() -> None:
        await ensure_indexes(context.database)
        await idempotency.ensure_indexes()
        await events.start()
        background.every(
            "savings-resend",
            context.settings.outbox_relay_interval_seconds,
            resend,
            failure_event="savings.resend_failed",
        )
        if settings.savings_scheduler_enabled:
            background.spawn("savings-accrual", scheduler.run())

    async def stop() -> None:
        await background.stop()
        await events.stop()

    async def ready() -> bool:
        return events.assigned and background.alive()

    return Feature(
        name="savings",
        routers=[savings_routes(service, idempotency)],
        result_handlers={
            DEPOSIT_TRANSACTION_TYPE: service.on_transfer_result,
            WITHDRAWAL_TRANSACTION_TYPE: service.on_transfer_result,
            INTEREST_TRANSACTION_TYPE: service.on_interest_result,
        },
        # Pending transfers are sent again (`resend_pending`); a day's interest payment by its
        # run, which waits for its own answer and tries a not-final one again (`_pay`).
        asked_again=of_types(
            DEPOSIT_TRANSACTION_TYPE, WITHDRAWAL_TRANSACTION_TYPE, INTEREST_TRANSACTION_TYPE
        ),
        start=start,
        stop=stop,
        ready=ready,
    )
