"""HTTP: offers and trades under /api/p2p/enhanced (CONTRACT.md, "P2P escrow")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from p2p.application.offers import OfferHandler
from p2p.application.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from p2p.application.ports import Trade
from p2p.application.trades import Caller, TradeHandler
from p2p.domain.errors import Conflict, Forbidden, NotFound, P2pError
from p2p.domain.offers import DEFAULT_PAYMENT_WINDOW_MINUTES
from p2p.domain.trades import IN_FLIGHT, Action
from shared.http import (
    CurrentUser,
    QueryParameters,
    TextCheckedRoute,
    User,
    error_response,
    error_responses,
)
from shared.http.idempotency import (
    Idempotency,
    IdempotencyKey,
    IdempotencyStore,
    MemoryIdempotencyStore,
    idempotency_responses,
)
from shared.paging import MAX_CURSOR_LENGTH

PREFIX: Final = "/api/p2p/enhanced"
_STATUS_BY_KIND: Final[tuple[tuple[type[P2pError], int], ...]] = (
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
)
_ACCEPTED: Final[dict[int | str, dict[str, Any]]] = {
    202: {"description": "Accepted: the wallet is still working; the trade"}
}


def http_status(error: P2pError) -> int:
    for kind, status in _STATUS_BY_KIND:
        if isinstance(error, kind):
            return status
    return 400


async def _p2p_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, P2pError)
    return error_response(http_status(exc), exc.code, exc.message)


class _Body(BaseModel):
    # Unknown fields (status, seller_id, fee, ...) are refused: no mass assignment.
    model_config = ConfigDict(extra="forbid")


class OfferBody(_Body):
    # Checked by the domain's rules, so that a JSON number or a bool gets a precise code.
    currency: str
    fiat_currency: str
    price: JsonValue
    min_amount: JsonValue
    max_amount: JsonValue
    payment_methods: JsonValue
    payment_window_minutes: JsonValue = DEFAULT_PAYMENT_WINDOW_MINUTES


class PageQuery(QueryParameters):
    """A list's query parameters, as the wallet's history and the gateway's withdrawals take
    them: an unknown one is refused (422), not silently ignored, and one left empty is absent.
    A `limit` out of range or a `cursor` too long is 422 `validation_error`; a `cursor` this API
    did not return is 400 `invalid_cursor`."""

    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)


class OffersQuery(PageQuery):
    currency: str | None = None
    fiat_currency: str | None = None


class TradesQuery(PageQuery):
    """The own trades' query parameters: which page only."""


class CreateTradeBody(_Body):
    offer_id: str = Field(max_length=200)
    amount: JsonValue


class TradeBody(_Body):
    trade_id: str = Field(max_length=200)


class ReasonBody(TradeBody):
    reason: str | None = None


class ResolveBody(TradeBody):
    outcome: str


@dataclass
class Handlers:
    offers: OfferHandler
    trades: TradeHandler
    # Where Idempotency-Key claims and answers are kept (MongoDB when deployed).
    idempotency: IdempotencyStore = field(default_factory=MemoryIdempotencyStore)


def _caller(user: User) -> Caller:
    return Caller(user.user_id, user.is_admin)


def _answer(trade: Trade) -> JSONResponse:
    """200 with the trade, or 202 while the wallet still has to answer."""
    return JSONResponse(trade.public(), status_code=202 if trade.status in IN_FLIGHT else 200)


def offers_router(handlers: Handlers) -> APIRouter:
    router = APIRouter(
        route_class=TextCheckedRoute,
        prefix=PREFIX,
        tags=["p2p offers"],
        responses=error_responses(401),
    )

    once = Idempotency(handlers.idempotency, f"p2p:POST {PREFIX}/offers", (P2pError,))

    @router.post(
        "/offers",
        status_code=201,
        response_model=dict[str, Any],
        responses={**error_responses(400, 422), **idempotency_responses()},
    )
    async def create_offer(
        body: OfferBody, user: CurrentUser, key: IdempotencyKey
    ) -> dict[str, Any] | JSONResponse:
        async def work() -> dict[str, Any]:
            offer = await handlers.offers.create(
                user.user_id,
                currency=body.currency,
                fiat_currency=body.fiat_currency,
                price=body.price,
                min_amount=body.min_amount,
                max_amount=body.max_amount,
                payment_methods=body.payment_methods,
                payment_window_minutes=body.payment_window_minutes,
                named_id=once.named_id(user, key),
            )
            return offer.public()

        return await once.run(user, key, work, status_code=201)

    @router.get("/offers", responses=error_responses(400, 422))
    async def list_offers(
        user: CurrentUser, query: Annotated[OffersQuery, Query()]
    ) -> dict[str, Any]:
        """The active offers, cheapest first, then the oldest; `next_cursor` pages."""
        page = await handlers.offers.list_active(
            query.currency, query.fiat_currency, limit=query.limit, cursor=query.cursor
        )
        return {"items": [o.public() for o in page.items], "next_cursor": page.next_cursor}

    @router.get("/offers/{offer_id}", responses=error_responses(404, 422))
    async def get_offer(offer_id: str, user: CurrentUser) -> dict[str, Any]:
        return (await handlers.offers.get(offer_id)).public()

    @router.delete("/offers/{offer_id}", responses=error_responses(403, 404, 422))
    async def withdraw_offer(offer_id: str, user: CurrentUser) -> dict[str, Any]:
        return (await handlers.offers.withdraw(user.user_id, offer_id)).public()

    return router


def trades_router(handlers: Handlers) -> APIRouter:
    router = APIRouter(
        route_class=TextCheckedRoute,
        prefix=PREFIX,
        tags=["p2p trades"],
        responses=error_responses(401),
    )
    actions: dict[int | str, dict[str, Any]] = {
        **_ACCEPTED,
        **error_responses(400, 403, 404, 409, 422),
    }

    once = Idempotency(handlers.idempotency, f"p2p:POST {PREFIX}/create-trade", (P2pError,))

    @router.post(
        "/create-trade",
        status_code=202,
        response_model=dict[str, Any],
        responses={**error_responses(400, 403, 404, 409, 422), **idempotency_responses()},
    )
    async def create_trade(
        body: CreateTradeBody, user: CurrentUser, key: IdempotencyKey
    ) -> dict[str, Any] | JSONResponse:
        async def work() -> dict[str, Any]:
            trade = await handlers.trades.create(
                user.user_id, body.offer_id, body.amount, once.named_id(user, key)
            )
            return trade.public()

        return await once.run(user, key, work, status_code=202)

    @router.post("/mark-paid", responses=actions)
    async def mark_paid(body: TradeBody, user: CurrentUser) -> JSONResponse:
        return _answer(await handlers.trades.act(_caller(user), body.trade_id, Action.MARK_PAID))

    @router.post("/release-crypto", responses=actions)
    async def release_crypto(body: TradeBody, user: CurrentUser) -> JSONResponse:
        return _answer(await handlers.trades.act(_caller(user), body.trade_id, Action.RELEASE))

    @router.post("/cancel-trade", responses=actions)
    async def cancel_trade(body: ReasonBody, user: CurrentUser) -> JSONResponse:
        trade = await handlers.trades.act(_caller(user), body.trade_id, Action.CANCEL, body.reason)
        return _answer(trade)

    @router.post("/dispute", responses=actions)
    async def dispute(body: ReasonBody, user: CurrentUser) -> JSONResponse:
        trade = await handlers.trades.act(_caller(user), body.trade_id, Action.DISPUTE, body.reason)
        return _answer(trade)

    @router.post("/resolve-dispute", responses=actions)
    async def resolve_dispute(body: ResolveBody, user: CurrentUser) -> JSONResponse:
        if not user.is_admin:
            raise Forbidden("admin_required", "only an admin resolves a dispute")
        outcomes = {"buyer": Action.RESOLVE_BUYER, "seller": Action.RESOLVE_SELLER}
        action = outcomes.get(body.outcome)
        if action is None:
            return error_response(400, "invalid_outcome", 'outcome is "buyer" or "seller"')
        return _answer(await handlers.trades.act(_caller(user), body.trade_id, action))

    @router.get("/trades/{trade_id}", responses=error_responses(404, 422))
    async def get_trade(trade_id: str, user: CurrentUser) -> dict[str, Any]:
        return (await handlers.trades.get(_caller(user), trade_id)).public()

    @router.get("/trades", responses=error_responses(400, 422))
    async def list_trades(
        user: CurrentUser, query: Annotated[TradesQuery, Query()]
    ) -> dict[str, Any]:
        """The caller's own trades, newest first; `next_cursor` pages."""
        page = await handlers.trades.list_own(_caller(user), limit=query.limit, cursor=query.cursor)
        return {"items": [t.public() for t in page.items], "next_cursor": page.next_cursor}

    return router


def include_routes(app: FastAPI, handlers: Handlers) -> None:
    app.add_exception_handler(P2pError, _p2p_error)
    app.include_router(offers_router(handlers))
    app.include_router(trades_router(handlers))
