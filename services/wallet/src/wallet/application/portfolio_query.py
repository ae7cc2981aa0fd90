"""A user's portfolio: their wallets valued at one snapshot of the prices read model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wallet.application.ports import LedgerStore
from wallet.application.prices import PriceBook
from wallet.domain.portfolio import Holding, Portfolio, value_portfolio


@dataclass(frozen=True, slots=True)
class PortfolioReport:
    user_id: str
    valuation_currency: str
    prices_as_of: datetime | None  # the oldest price used; None when nothing was priced
    portfolio: Portfolio


async def portfolio_of(store: LedgerStore, prices: PriceBook, user_id: str) -> PortfolioReport:
    wallets = await store.wallets_of(user_id)
    snapshot = prices.snapshot()
    holdings = [
        Holding(w.currency, w.balances.available, w.balances.locked, w.balances.savings)
        for w in wallets
    ]
    portfolio = value_portfolio(holdings, snapshot.prices(), snapshot.valuation_currency)
    priced = {a.currency for a in portfolio.assets if a.price is not None}
    return PortfolioReport(
        user_id=user_id,
        valuation_currency=snapshot.valuation_currency,
        prices_as_of=snapshot.oldest_as_of(priced),
        portfolio=portfolio,
    )
