"""HTTP routes of swaps, express buy and liquidity funding, and the feature factory."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from shared.background import BackgroundTasks
from shared.http import AdminUser, CurrentUser, TextCheckedRoute, error_body, error_responses
from shared.money import format_amount
from trading.conversions.adapters.mongo import MongoFundings, MongoQuotes
from trading.conversions.adapters.wallet import WalletCommandSender
from trading.conversions.application import LIQUIDITY_FUNDING, Conversions, Funding, Liquidity
from trading.conversions.domain import ConversionKind, Quote, QuoteUsed
from trading.conversions.settings import ConversionSettings
from trading.feature import Feature, TradingContext, of_types

Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s\x00-\x1f]+$")]
AmountText = Annotated[str, Field(description="decimal string", examples=["0.01"])]


class _Body(BaseModel):
    # Unknown fields (status, user_id, rate, …) are refused: no mass assignment.
    model_config = ConfigDict(extra="forbid")


class SwapQuoteRequest(_Body):
    from_currency: str = Field(examples=["BTC"])
    to_currency: str = Field(examples=["ETH"])
    from_amount: AmountText


class ExpressBuyQuoteRequest(_Body):
    fiat_currency: str = Field(examples=["GBP"])
    fiat_amount: AmountText = Field(examples=["100.00"])
    crypto_currency: str = Field(examples=["BTC"])


class ExecuteRequest(_Body):
    quote_id: Id


class LiquidityRequest(_Body):
    currency: str = Field(examples=["ETH"])
    amount: AmountText = Field(examples=["100"])
    reference_id: Id


class SwapQuoteView(BaseModel):
    quote_id: str
    from_currency: str
    to_currency: str
    from_amount: str
    fee: str = Field(description="from_amount × SWAP_FEE_RATE, rounded up")
    fee_currency: str
    rate: str = Field(description="to per 1 from, after the spread; rounded down to 18 decimals")
    to_amount: str = Field(description="(from_amount − fee) × rate, rounded down")
    expires_at: datetime

    @classmethod
    def of(cls, q: Quote) -> SwapQuoteView:
        return cls(
            quote_id=q.quote_id,
            from_currency=q.pay_currency,
            to_currency=q.receive_currency,
            from_amount=format_amount(q.pay_amount),
            fee=format_amount(q.fee),
            fee_currency=q.pay_currency,
            rate=format_amount(q.rate),
            to_amount=format_amount(q.receive_amount),
            expires_at=q.expires_at,
        )


class SwapView(SwapQuoteView):
    swap_id: str
    status: str = Field(description="pending | completed | failed")
    reason: str | None = Field(None, description="why it failed, e.g. insufficient_funds")
    executed_at: datetime | None

    @classmethod
    def of(cls, q: Quote) -> SwapView:
        assert q.execution_id is not None
        return cls(
            **SwapQuoteView.of(q).model_dump(),
            swap_id=q.execution_id,
            status=q.status.value,
            reason=q.reason,
            executed_at=q.executed_at,
        )


class ExpressBuyQuoteView(BaseModel):
    quote_id: str
    fiat_currency: str
    fiat_amount: str
    fee: str = Field(description="fiat, = fiat_amount × EXPRESS_BUY_FEE_RATE, rounded up")
    fee_currency: str
    rate: str = Field(description="crypto per 1 unit of fiat; rounded down to 18 decimals")
    crypto_currency: str
    crypto_amount: str = Field(description="(fiat_amount − fee) × rate, rounded down")
    expires_at: datetime

    @classmethod
    def of(cls, q: Quote) -> ExpressBuyQuoteView:
        return cls(
            quote_id=q.quote_id,
            fiat_currency=q.pay_currency,
            fiat_amount=format_amount(q.pay_amount),
            fee=format_amount(q.fee),
            fee_currency=q.pay_currency,
            rate=format_amount(q.rate),
            crypto_currency=q.receive_currency,
            crypto_amount=format_amount(q.receive_amount),
            expires_at=q.expires_at,
        )


class ExpressBuyView(ExpressBuyQuoteView):
    order_id: str
    status: str = Field(description="pending | completed | failed")
    reason: str | None = Field(None, description="why it failed, e.g. insufficient_funds")
    executed_at: datetime | None

    @classmethod
    def of(cls, q: Quote) -> ExpressBuyView:
        assert q.execution_id is not None
        return cls(
            **ExpressBuyQuoteView.of(q).model_dump(),
            order_id=q.execution_id,
            status=q.status.value,
            reason=q.reason,
            executed_at=q.executed_at,
        )


class FundingView(BaseModel):
    status: str = Field(description="pending (202 answers always); then completed | failed")
    reference_id: str
    currency: str
    amount: str
    reason: str | None = None

    @classmethod
    def of(cls, f: Funding, *, accepted: bool = False) -> FundingView:
        return cls(
            # A POST reports the request accepted and its command in flight (also on a repeat,
            # which resends it idempotently); GET reports where it is.
            status="pending" if accepted else f.status.value,
            reference_id=f.reference_id,
            currency=f.currency,
            amount=format_amount(f.amount),
            reason=None if accepted else f.reason,
        )


def quote_used_answer(used: QuoteUsed, id_field: str) -> JSONResponse:
    """409 quote_used with the error body, which also names what the quote became (`id_field`:
    swap_id / order_id): a client whose execute answer was lost follows it with GET. The
    error handlers answer code and message only, so this route builds the body itself."""
    body = error_body(used.code, used.message)
    body["error"][id_field] = used.execution_id
    return JSONResponse(body, status_code=used.http_status)


def conversion_routes(conversions: Conversions) -> APIRouter:
    router = APIRouter(route_class=TextCheckedRoute, tags=["swap and express buy"])
    swap, express = ConversionKind.SWAP, ConversionKind.EXPRESS_BUY

    @router.post(
        "/api/swap/quote",
        response_model=SwapQuoteView,
        responses=error_responses(400, 401, 422, 503),
    )
    async def swap_quote(body: SwapQuoteRequest, user: CurrentUser) -> SwapQuoteView:
        """A firm quote for SWAP_QUOTE_TTL_SECONDS; 503 price_unavailable without fresh prices."""
        quote = await conversions.quote_swap(
            user.user_id, body.from_currency, body.to_currency, body.from_amount
        )
        return SwapQuoteView.of(quote)

    @router.post(
        "/api/swap/execute",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=SwapView,
        responses=error_responses(400, 401, 404, 409, 422),
    )
    async def swap_execute(body: ExecuteRequest, user: CurrentUser) -> SwapView | JSONResponse:
        """Execute once: 409 quote_used (its error names the `swap_id`) / quote_expired, or
        quote_busy (nothing executed: the quote read as still open though a racing execute had
        claimed it; execute it again); 404 for someone else's quote."""
        try:
            executed = await conversions.execute(swap, user.user_id, body.quote_id)
        except QuoteUsed as used:
            return quote_used_answer(used, "swap_id")
        return SwapView.of(executed)

    @router.get(
        "/api/swap/{swap_id}", response_model=SwapView, responses=error_responses(401, 404, 422)
    )
    async def swap_get(swap_id: Annotated[str, Path()], user: CurrentUser) -> SwapView:
        return SwapView.of(await conversions.get(swap, swap_id, user.user_id, admin=user.is_admin))

    @router.post(
        "/api/express-buy/quote",
        response_model=ExpressBuyQuoteView,
        responses=error_responses(400, 401, 422, 503),
    )
    async def express_quote(body: ExpressBuyQuoteRequest, user: CurrentUser) -> ExpressBuyQuoteView:
        """A firm quote for EXPRESS_BUY_QUOTE_TTL_SECONDS; paid from the user's fiat balance."""
        quote = await conversions.quote_express_buy(
            user.user_id, body.fiat_currency, body.fiat_amount, body.crypto_currency
        )
        return ExpressBuyQuoteView.of(quote)

    @router.post(
        "/api/express-buy/execute",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ExpressBuyView,
        responses=error_responses(400, 401, 404, 409, 422),
    )
    async def express_execute(
        body: ExecuteRequest, user: CurrentUser
    ) -> ExpressBuyView | JSONResponse:
        """Execute once: 409 quote_used (its error names the `order_id`) / quote_expired, or
        quote_busy (nothing executed: the quote read as still open though a racing execute had
        claimed it; execute it again); 404 for someone else's quote."""
        try:
            executed = await conversions.execute(express, user.user_id, body.quote_id)
        except QuoteUsed as used:
            return quote_used_answer(used, "order_id")
        return ExpressBuyView.of(executed)

    @router.get(
        "/api/express-buy/{order_id}",
        response_model=ExpressBuyView,
        responses=error_responses(401, 404, 422),
    )
    async def express_get(order_id: Annotated[str, Path()], user: CurrentUser) -> ExpressBuyView:
        quote = await conversions.get(express, order_id, user.user_id, admin=user.is_admin)
        return ExpressBuyView.of(quote)

    return router


def liquidity_routes(liquidity: Liquidity) -> APIRouter:
    router = APIRouter(route_class=TextCheckedRoute, tags=["liquidity (admin)"])

    @router.post(
        "/api/admin/liquidity",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=FundingView,
        responses=error_responses(400, 401, 403, 409, 422),
    )
    async def fund(body: LiquidityRequest, admin: AdminUser) -> FundingView:
        """Move `amount` from external:treasury into platform:liquidity, once per reference_id
        (a repeat with other figures: 409 idempotency_conflict). 202 pending also when the
        command could not be sent: the funding is stored and the relay sends it."""
        funding = await liquidity.fund(admin.user_id, body.currency, body.amount, body.reference_id)
        return FundingView.of(funding, accepted=True)

    @router.get(
        "/api/admin/liquidity/{reference_id}",
        response_model=FundingView,
        responses=error_responses(401, 403, 404, 422),
    )
    async def funding_status(reference_id: str, admin: AdminUser) -> FundingView:
        return FundingView.of(await liquidity.get(reference_id))

    return router


def build_conversions_feature(
    context: TradingContext, settings: ConversionSettings | None = None
) -> Feature:
    settings = settings or ConversionSettings()
    quotes = MongoQuotes(context.database)
    sender = WalletCommandSender(context.wallet)
    conversions = Conversions(
        quotes=quotes,
        wallet=sender,
        prices=context.prices,
        terms=settings.terms(),
        clock=context.clock,
    )
    fundings = MongoFundings(context.database)
    liquidity = Liquidity(fundings=fundings, wallet=sender, clock=context.clock)
    interval = context.settings.outbox_relay_interval_seconds
    ask_again_after = timedelta(seconds=settings.conversion_ask_again_after_seconds)
    background = BackgroundTasks()

    async def relay() -> None:
        await conversions.resend_unpublished(grace=timedelta(seconds=interval))
        await conversions.ask_again(after=ask_again_after)

    async def relay_fundings() -> None:
        await liquidity.resend_unpublished(grace=timedelta(seconds=interval))
        await liquidity.ask_again(after=ask_again_after)

    async def start() -> None:
        await quotes.ensure_indexes()
        await fundings.ensure_indexes()
        await conversions.resend_unpublished(grace=timedelta(0))
        await liquidity.resend_unpublished(grace=timedelta(0))
        background.every(
            "conversions-relay", interval, relay, failure_event="conversions.relay_failed"
        )
        # Its own task: a pass of one relay that fails holds back no pass of the other.
        background.every(
            "liquidity-relay", interval, relay_fundings, failure_event="liquidity.relay_failed"
        )

    async def ready() -> bool:
        return background.alive()

    return Feature(
        name="conversions",
        routers=[conversion_routes(conversions), liquidity_routes(liquidity)],
        result_handlers={
            ConversionKind.SWAP.value: conversions.apply_result,
            ConversionKind.EXPRESS_BUY.value: conversions.apply_result,
            LIQUIDITY_FUNDING: liquidity.apply_result,
        },
        # Pending swaps, express buys and fundings are asked again (`ask_again` passes).
        asked_again=of_types(
            ConversionKind.SWAP.value, ConversionKind.EXPRESS_BUY.value, LIQUIDITY_FUNDING
        ),
        start=start,
        stop=background.stop,
        ready=ready,
    )
