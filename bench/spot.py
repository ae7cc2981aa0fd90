"""The contract's model of a spot run, and the helpers that drive one over HTTP.

A run trades identical orders in each of its markets: every maker sells `amount` of the base at
`price`, every taker buys as much at the same price once the makers rest, so each taker meets one
maker. The contract then fixes how every order ends (`filled` by one fill at the maker's price,
each side's fee taken from what it receives and rounded up to the currency's scale), every
trader's balances and `platform:fees`. Maker n and taker n of a market belong to `seller<k>` and
`buyer<k>`, k = n % traders; sellers are funded with every market's base, buyers with every quote.

Used by the end-to-end bench (`bench.matcher`) and by the reliability test of two trading
processes (`tests/reliability/test_two_trading_processes.py`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any, Final

import httpx

from bench.pipeline import (
    JWT_SECRET,
    platform_balances,
    results_service_env,
    wallet_balances,
)
from bench.workload import WalletKey
from shared.http import make_token
from shared.messaging.topics import Topics
from shared.money import get_currency
from shared.wallet_client import WalletClient

# BTC-GBP as the bench trades it (each taker buys AMOUNT at PRICE from one maker) and the funding;
# the contract's default fee rates, which a run sets explicitly (SPOT_MAKER_FEE_RATE, …_TAKER_…).
AMOUNT: Final = Decimal("0.00123")  # 61.50 GBP a trade: the maker's fee, 0.0615, rounds up
PRICE: Final = Decimal("50000.00")
SELLER_BASE: Final = Decimal("1")  # of every market's base currency
BUYER_QUOTE: Final = Decimal("100000.00")  # of every market's quote currency
MAKER_FEE_RATE: Final = Decimal("0.001")
TAKER_FEE_RATE: Final = Decimal("0.002")
TRADERS: Final = 20  # sellers, and as many buyers
FEES: Final = "platform:fees"


def _fee(amount: Decimal, rate: Decimal, currency: str) -> Decimal:
    """The contract's fee: amount × rate, rounded up to the currency's scale."""
    step = Decimal(1).scaleb(-get_currency(currency).scale)
    return (amount * rate).quantize(step, rounding=ROUND_CEILING)


@dataclass(frozen=True, slots=True)
class TradeModel:
    """One trade of `amount` base at `price` in `pair` as the contract computes it: the buyer
    (taker) pays `quote` and its fee comes out of the base it receives; the seller (maker)
    delivers `amount` and its fee comes out of the quote it receives."""

    pair: str
    amount: Decimal
    price: Decimal
    quote: Decimal
    maker_fee: Decimal  # quote currency
    taker_fee: Decimal  # base currency

    @property
    def base_currency(self) -> str:
        return self.pair.split("-")[0]

    @property
    def quote_currency(self) -> str:
        return self.pair.split("-")[1]


def spot_model(
    maker_rate: Decimal = MAKER_FEE_RATE,
    taker_rate: Decimal = TAKER_FEE_RATE,
    *,
    pair: str = "BTC-GBP",
    amount: Decimal = AMOUNT,
    price: Decimal = PRICE,
) -> TradeModel:
    base, quote_currency = pair.split("-")
    quote = amount * price
    return TradeModel(
        pair,
        amount,
        price,
        quote,
        _fee(quote, maker_rate, quote_currency),
        _fee(amount, taker_rate, base),
    )


@dataclass(slots=True)
class SpotFound:
    """What the system answered: every order as trading reports it (taker or maker), then the
    wallet's balances of every trader and of the platform accounts, and the ledger transactions
    it settled each trade with (from the traders' histories)."""

    takers: list[dict[str, Any]] = field(default_factory=list)
    makers: list[dict[str, Any]] = field(default_factory=list)
    balances: dict[WalletKey, tuple[Decimal, Decimal]] = field(default_factory=dict)
    platform: dict[WalletKey, Decimal] = field(default_factory=dict)
    settled: dict[str, set[str]] = field(default_factory=dict)  # trade id → ledger transactions


def _wrong_order(order: dict[str, Any], model: TradeModel, liquidity: str) -> str | None:
    if liquidity == "maker":
        fee, fee_currency = model.maker_fee, model.quote_currency
    else:
        fee, fee_currency = model.taker_fee, model.base_currency
    expected = [(model.price, model.amount, fee, fee_currency, liquidity)]
    fills = [
        (
            Decimal(f["price"]),
            Decimal(f["amount"]),
            Decimal(f["fee"]),
            f["fee_currency"],
            f.get("liquidity"),
        )
        for f in order.get("fills", [])
    ]
    if order.get("status") != "filled" or fills != expected:
        return (
            f"order {order.get('order_id')}: {order.get('status')} with fills {fills},"
            f" model filled with {expected}"
        )
    return None


def funding(models: Iterable[TradeModel], traders: int = TRADERS) -> dict[WalletKey, Decimal]:
    """What each trader is given before a run: every base to the sellers, every quote to the
    buyers."""
    funds: dict[WalletKey, Decimal] = {}
    for model in models:
        for n in range(traders):
            funds[(f"seller{n}", model.base_currency)] = SELLER_BASE
            funds[(f"buyer{n}", model.quote_currency)] = BUYER_QUOTE
    return funds


def wrong_against(
    models: TradeModel | Sequence[TradeModel], found: SpotFound, traders: int = TRADERS
) -> list[str]:
    """Every way what ran differs from the contract: an empty list when it is right. The trades
    of a market are its takers; each order is checked against its market's model."""
    models = [models] if isinstance(models, TradeModel) else list(models)
    by_pair = {model.pair: model for model in models}
    wrong: list[str] = []
    for orders, liquidity in ((found.takers, "taker"), (found.makers, "maker")):
        for order in orders:
            model = by_pair.get(order.get("pair", ""))
            problem = (
                f"order {order.get('order_id')}: in {order.get('pair')}, which no model trades"
                if model is None
                else _wrong_order(order, model, liquidity)
            )
            if problem is not None:
                wrong.append(problem)
    # each trade on one buy and one sell, settled by the wallet in one ledger transaction: a fill
    # decided twice shows here even where the holds kept the balances right
    trades = Counter(f["trade_id"] for o in found.takers + found.makers for f in o.get("fills", []))
    for trade_id in sorted(trades.keys() | found.settled.keys()):
        on, settled = trades[trade_id], len(found.settled.get(trade_id, ()))
        if (on, settled) != (2, 1):
            wrong.append(f"trade {trade_id}: on {on} orders, settled {settled} times; model 2, 1")
    zero = Decimal(0)
    available = funding(models, traders)
    fees: dict[WalletKey, Decimal] = {}

    def move(into: dict[WalletKey, Decimal], key: WalletKey, amount: Decimal) -> None:
        into[key] = into.get(key, zero) + amount

    for model in models:
        base, quote = model.base_currency, model.quote_currency
        for n in range(traders):  # what a trader receives is checked even when it is nothing
            available.setdefault((f"seller{n}", quote), zero)
            available.setdefault((f"buyer{n}", base), zero)
        for n in range(sum(order.get("pair") == model.pair for order in found.takers)):
            seller, buyer = f"seller{n % traders}", f"buyer{n % traders}"
            move(available, (seller, base), -model.amount)
            move(available, (seller, quote), model.quote - model.maker_fee)
            move(available, (buyer, quote), -model.quote)
            move(available, (buyer, base), model.amount - model.taker_fee)
            move(fees, (FEES, quote), model.maker_fee)
            move(fees, (FEES, base), model.taker_fee)
    for (user, currency), amount in available.items():
        held = found.balances.get((user, currency), (zero, zero))
        if held != (amount, zero):
            wrong.append(f"{user} {currency}: (available, locked) {held}, model {(amount, zero)}")
    for key, total in fees.items():
        if found.platform.get(key, zero) != total:
            wrong.append(f"{key[0]} {key[1]}: {found.platform.get(key)}, model {total}")
    return wrong


def trading_env(
    bootstrap: str, topics: Topics, mongodb_url: str, database: str, port: int
) -> dict[str, str]:
    """`python -m trading`'s environment for a run: the contract's default fee rates set
    explicitly, and consumer groups of the run's own with short sessions (a fresh group joins in
    about a session timeout, and a member that died is noticed after one)."""
    return {
        **results_service_env("TRADING", bootstrap, topics, mongodb_url, database, port),
        "SPOT_MAKER_FEE_RATE": str(MAKER_FEE_RATE),
        "SPOT_TAKER_FEE_RATE": str(TAKER_FEE_RATE),
        "SPOT_MATCHER_GROUP": f"{topics.prefix}trading-spot-matcher",
        "SPOT_MATCHER_SESSION_TIMEOUT_MS": "3000",
        "SPOT_MATCHER_HEARTBEAT_INTERVAL_MS": "500",
    }


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, ())}"}


async def fund(client: WalletClient, models: Iterable[TradeModel], traders: int = TRADERS) -> None:
    """Credit every trader's funding through the wallet; raises if the wallet refuses one."""

    async def credit(user: str, currency: str, amount: Decimal) -> None:
        fiat = get_currency(currency).kind == "fiat"
        result = await client.credit(
            user_id=user,
            currency=currency,
            amount=str(amount),
            transaction_type="deposit_bank_transfer" if fiat else "deposit_nowpayments",
            reference_id=f"spot-fund-{user}-{currency}",
        )
        if result is None or result.status != "applied":
            raise AssertionError(f"funding refused: {result}")

    await asyncio.gather(
        *(credit(*key, amount) for key, amount in funding(models, traders).items())
    )


async def place(http: httpx.AsyncClient, model: TradeModel, user: str, side: str) -> str:
    """A limit order of the model's amount at its price; its id once trading accepted it."""
    response = await http.post(
        "/api/trading/execute",
        json={
            "pair": model.pair,
            "side": side,
            "type": "limit",
            "amount": str(model.amount),
            "price": str(model.price),
        },
        headers=auth(user),
    )
    if response.status_code != 202:
        raise AssertionError(response.text)
    return str(response.json()["order_id"])


async def order_of(http: httpx.AsyncClient, user: str, order_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/trading/orders/{order_id}", headers=auth(user))
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def resting_asks(http: httpx.AsyncClient, pair: str) -> Decimal:
    """The amount the market's order book shows on its ask side."""
    response = await http.get(f"/api/trading/orderbook/{pair}")
    response.raise_for_status()
    return sum((Decimal(a) for _, a in response.json()["asks"]), Decimal(0))


async def read_wallet(found: SpotFound, wallet_port: int, traders: int = TRADERS) -> None:
    """Every trader's (available, locked), the platform accounts and the trades settled, as the
    wallet reports them."""
    users = [f"{side}{n}" for side in ("seller", "buyer") for n in range(traders)]
    found.balances = {
        key: (available, locked)
        for key, (available, locked, _) in (await wallet_balances(wallet_port, users)).items()
    }
    found.platform = await platform_balances(wallet_port)
    found.settled = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{wallet_port}", timeout=30) as http:
        for user in users:
            cursor: str | None = None
            while True:
                response = await http.get(
                    f"/api/wallets/transactions/{user}",
                    params={"limit": 200, **({"cursor": cursor} if cursor else {})},
                    headers=auth(user),
                )
                response.raise_for_status()
                page = response.json()
                for item in page["items"]:
                    if item["transaction_type"] == "spot_trade":
                        found.settled.setdefault(item["reference_id"], set()).add(
                            item["ledger_transaction_id"]
                        )
                if (cursor := page["next_cursor"]) is None:
                    break
