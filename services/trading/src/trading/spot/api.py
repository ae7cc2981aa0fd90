"""HTTP routes of spot trading (CONTRACT.md, "Spot trading")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from shared.http import CurrentUser, QueryParameters, TextCheckedRoute, error_responses
from shared.money import format_amount
from shared.paging import MAX_CURSOR_LENGTH
from trading.spot.domain.book import OrderType, Side
from trading.spot.domain.markets import MARKETS
from trading.spot.orders import SpotOrder
from trading.spot.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from trading.spot.service import SpotOrders

OrderId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\s\x00-\x1f]+$")]


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pair: str = Field(examples=["BTC-GBP"])
    side: Side
    type: OrderType
    amount: str | None = Field(
        None, description="base amount, a multiple of amount_step", examples=["0.01"]
    )
    price: str | None = Field(
        None, description="limit only: a multiple of price_tick", examples=["52000.00"]
    )
    quote_amount: str | None = Field(
        None,
        description="market buy only, instead of amount: the quote to spend",
        examples=["100.00"],
    )
    client_order_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="optional: placing again with the same one returns the same order",
    )
    # Strict: JSON `true` or "60" is no number of seconds (lax, they were read as 1 and 60).
    expires_in_seconds: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=90 * 24 * 3600,
        description="limit only: cancelled (reason expired) and unlocked if still open then",
    )


class OrdersQuery(QueryParameters):
    """The list's query parameters, a page at a time as the wallet's history and the P2P lists
    take them: a `limit` out of range or a `cursor` too long is 422 `validation_error`; a `cursor`
    this API did not return is 400 `invalid_cursor`."""

    status: Literal["open", "closed"] | None = None
    limit: int = Field(
        default=DEFAULT_PAGE_SIZE,
        ge=1,
        le=MAX_PAGE_SIZE,
        description=f"at most this many orders (default {DEFAULT_PAGE_SIZE}, what the list "
        "answered before it paged)",
    )
    cursor: str | None = Field(
        default=None,
        max_length=MAX_CURSOR_LENGTH,
        description="the next_cursor of the page before",
    )


class FillView(BaseModel):
    trade_id: str
    price: str = Field(description="the maker's price")
    amount: str
    fee: str = Field(description="taken from what this side received, rounded up per fill")
    fee_currency: str
    liquidity: Literal["maker", "taker"]


class OrderView(BaseModel):
    order_id: str
    pair: str
    side: Side
    type: OrderType
    price: str | None
    amount: str | None
    quote_amount: str | None
    filled_amount: str
    status: str = Field(
        description="pending | open | partially_filled | filled | cancelled | failed"
    )
    reason: str | None = Field(
        description="insufficient_funds, no_liquidity, self_trade, user_cancelled, dust, slippage, …"
    )
    client_order_id: str | None
    expires_at: str | None
    locked_amount: str = Field(description="what its lock was (lock_currency)")
    lock_currency: str
    fills: list[FillView]
    created_at: str
    updated_at: str | None

    @classmethod
    def of(cls, order: SpotOrder) -> OrderView:
        return cls(
            order_id=order.order_id,
            pair=order.pair,
            side=order.side,
            type=order.type,
            price=None if order.price is None else format(order.price, "f"),
            amount=None if order.amount is None else format_amount(order.amount),
            quote_amount=None if order.quote_amount is None else format_amount(order.quote_amount),
            filled_amount=format_amount(order.filled_amount),
            status=order.status.value,
            reason=order.reason,
            client_order_id=order.client_order_id,
            expires_at=None if order.expires_at is None else order.expires_at.isoformat(),
            locked_amount=format_amount(order.lock_amount),
            lock_currency=order.lock_currency,
            fills=[FillView.model_validate(f.as_json()) for f in order.fills],
            created_at=order.created_at.isoformat(),
            updated_at=None if order.updated_at is None else order.updated_at.isoformat(),
        )


class OrderList(BaseModel):
    items: list[OrderView]
    next_cursor: str | None = Field(
        description="the cursor of the next page; null on the last page"
    )


class MarketView(BaseModel):
    pair: str
    base: str
    quote: str
    price_tick: str
    amount_step: str
    min_amount: str


class MarketList(BaseModel):
    items: list[MarketView]


class OrderBookView(BaseModel):
    pair: str
    bids: list[tuple[str, str]] = Field(description="[price, amount] per level, best first")
    asks: list[tuple[str, str]] = Field(description="[price, amount] per level, best first")


def spot_routes(orders: SpotOrders) -> APIRouter:
    router = APIRouter(route_class=TextCheckedRoute, tags=["spot trading"])

    @router.get("/api/trading/markets", response_model=MarketList)
    async def markets() -> MarketList:
        return MarketList(items=[MarketView(**m.as_json()) for m in MARKETS.values()])

    @router.post(
        "/api/trading/execute",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=OrderView,
        responses=error_responses(400, 401, 409, 422),
    )
    async def execute(body: ExecuteRequest, user: CurrentUser) -> OrderView:
        """Place an order: `pending` until its funds are locked, then matched by the market's
        matcher. 422: unknown_market, price_required, price_not_allowed, price_off_tick,
        amount_required, amount_off_step, amount_below_minimum, amount_or_quote_amount,
        quote_amount_not_allowed, order_too_small, expiry_not_allowed, amount_malformed,
        amount_not_positive, …
        409 idempotency_conflict: client_order_id already named a different order."""
        order = await orders.place(
            user.user_id,
            pair=body.pair,
            side=body.side,
            type=body.type,
            amount=body.amount,
            price=body.price,
            quote_amount=body.quote_amount,
            client_order_id=body.client_order_id,
            expires_in_seconds=body.expires_in_seconds,
        )
        return OrderView.of(order)

    @router.get(
        "/api/trading/orders", response_model=OrderList, responses=error_responses(400, 401, 422)
    )
    async def list_orders(user: CurrentUser, query: Annotated[OrdersQuery, Query()]) -> OrderList:
        """Own orders, newest first (then by order_id): open = pending, open, partially_filled;
        closed = the rest. `next_cursor` pages; 400 invalid_cursor for a cursor this API did not
        return."""
        page = await orders.of_user(
            user.user_id, query.status, limit=query.limit, cursor=query.cursor
        )
        return OrderList(items=[OrderView.of(o) for o in page.items], next_cursor=page.next_cursor)

    @router.get(
        "/api/trading/orders/{order_id}",
        response_model=OrderView,
        responses=error_responses(401, 404, 422),
    )
    async def get_order(order_id: OrderId, user: CurrentUser) -> OrderView:
        """404 order_not_found also for someone else's order."""
        return OrderView.of(await orders.get(order_id, user.user_id, admin=user.is_admin))

    @router.delete(
        "/api/trading/orders/{order_id}",
        response_model=OrderView,
        responses={
            202: {"model": OrderView, "description": "cancel accepted, on its way to the matcher"},
            **error_responses(401, 404, 409, 422),
        },
    )
    async def cancel_order(order_id: OrderId, user: CurrentUser, response: Response) -> OrderView:
        """Cancel the open remainder and unlock it: 200 with the cancelled order, or 202 while the
        matcher has not confirmed yet. 409 order_not_open for a filled or failed order."""
        order, done = await orders.cancel(order_id, user.user_id)
        if not done:
            response.status_code = status.HTTP_202_ACCEPTED
        return OrderView.of(order)

    @router.get(
        "/api/trading/orderbook/{pair}",
        response_model=OrderBookView,
        responses=error_responses(404, 422),
    )
    async def order_book(pair: Annotated[str, Path(max_length=20)]) -> Any:
        """The aggregated book (no token needed); 404 unknown_market."""
        return await orders.order_book(pair)

    return router
