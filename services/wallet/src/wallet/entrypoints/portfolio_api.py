"""GET /api/wallets/portfolio/{user_id} (CONTRACT.md, "Wallet read side")."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, Field

from shared.http import (
    ApiError,
    CurrentUser,
    QueryParameters,
    TextCheckedRoute,
    ensure_can_read,
    error_responses,
)
from shared.money import MoneyError, get_currency
from wallet.application.portfolio_query import PortfolioReport, portfolio_of
from wallet.application.prices import PriceBook
from wallet.domain.portfolio import display_value
from wallet.entrypoints.http import StoredDecimal, store_of


class AssetView(BaseModel):
    currency: str
    available_balance: StoredDecimal
    locked_balance: StoredDecimal
    savings_balance: StoredDecimal
    holding: StoredDecimal
    price: StoredDecimal | None
    value: str | None  # rounded half-up to the valuation currency's scale, for display
    percentage: str | None  # two decimals, "12.50"


class AllocationView(BaseModel):
    label: str
    value: str
    percentage: str


class PortfolioView(BaseModel):
    user_id: str
    valuation_currency: str
    prices_as_of: AwareDatetime | None
    total_value: str
    assets: list[AssetView]
    allocation: list[AllocationView]
    unpriced: list[str]


class PortfolioQuery(QueryParameters):
    currency: str = Field(default="GBP", max_length=20, description="The valuation currency.")


def price_book_of(request: Request) -> PriceBook:
    book: PriceBook = request.app.state.prices
    return book


def portfolio_view(report: PortfolioReport) -> PortfolioView:
    scale = get_currency(report.valuation_currency).scale
    p = report.portfolio

    def shown(value: Decimal) -> str:
        return f"{display_value(value, scale):f}"

    return PortfolioView(
        user_id=report.user_id,
        valuation_currency=report.valuation_currency,
        prices_as_of=report.prices_as_of,
        total_value=shown(p.total_value),
        assets=[
            AssetView(
                currency=a.currency,
                available_balance=a.holding.available,
                locked_balance=a.holding.locked,
                savings_balance=a.holding.savings,
                holding=a.holding.holding,
                price=a.price,
                value=None if a.value is None else shown(a.value),
                percentage=None if a.percentage is None else f"{a.percentage:.2f}",
            )
            for a in p.assets
        ],
        allocation=[
            AllocationView(label=s.label, value=shown(s.value), percentage=f"{s.percentage:.2f}")
            for s in p.allocation
        ],
        unpriced=list(p.unpriced),
    )


async def load_portfolio(request: Request, user_id: str) -> PortfolioView:
    return portfolio_view(await portfolio_of(store_of(request), price_book_of(request), user_id))


router = APIRouter(
    route_class=TextCheckedRoute,
    prefix="/api/wallets",
    tags=["wallets"],
    responses=error_responses(401, 403, 422),
)


@router.get(
    "/portfolio/{user_id:user_id}",
    response_model=PortfolioView,
    responses=error_responses(400),  # an unknown valuation currency, or one prices are not in
)
async def get_portfolio(
    user_id: str,
    user: CurrentUser,
    request: Request,
    query: Annotated[PortfolioQuery, Query()],
) -> PortfolioView:
    """Holdings (total + savings) valued at one price snapshot; percentages sum to 100.00;
    assets without a price are listed with null price and value, never an error."""
    ensure_can_read(user, user_id)
    try:
        code = get_currency(query.currency).code
    except MoneyError as error:
        raise ApiError(400, error.code, error.message) from None
    valuation = price_book_of(request).valuation_currency
    if code != valuation:
        raise ApiError(
            400,
            "unsupported_valuation_currency",
            f"portfolios are valued in {valuation}, the currency prices are published in",
        )
    return await load_portfolio(request, user_id)
