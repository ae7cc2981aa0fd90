"""Black-box acceptance of the contract's "Wave 2 additions", against the whole system as `make run`
starts it (every service, embedded Kafka and MongoDB, the NOWPayments simulator).

Written from /work/shared/CONTRACT.md only: every figure is recomputed here from the contract's
formulas and the prices the system publishes (pinned in staging, so that they hold still). Users are
fresh per test (one system serves the whole module) and tests run in order, so platform account
deltas measured inside a test belong to it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest

from shared.http import make_token
from shared.infra import free_port
from shared.messaging.topics import Topics
from shared.money import NOWPAYMENTS_TICKERS, get_currency
from shared.wallet_client import WalletClient
from tests.system import RunningSystem

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEV_JWT_SECRET = "dev-only-jwt-secret-not-for-production"
PINNED = {
    "BTC": "50000.00",
    "ETH": "2999.99",
    "LTC": "70.12",
    "SOL": "120.50",
    "TRX": "0.09",
    "USDT": "0.79",
}
RATE_PLACES = Decimal(1).scaleb(-18)


def D(value: Any) -> Decimal:
    return Decimal(str(value))


def step_of(currency: str) -> Decimal:
    return Decimal(1).scaleb(-get_currency(currency).scale)


def down(value: Decimal, currency: str) -> Decimal:
    return value.quantize(step_of(currency), rounding=ROUND_FLOOR)


def up(value: Decimal, currency: str) -> Decimal:
    return value.quantize(step_of(currency), rounding=ROUND_CEILING)


def within_scale(text: Any, currency: str) -> bool:
    """A decimal string (never a JSON number) with no more places than the currency holds."""
    if not isinstance(text, str):
        return False
    exponent = Decimal(text).as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent <= get_currency(currency).scale


def until(what: str, probe: Callable[[], Any], within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s (last: {value!r})"
        time.sleep(0.2)


def assert_error(response: httpx.Response, status: int | set[int], code: str | None = None) -> None:
    statuses = {status} if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str), body
    assert body["error"]["code"], body
    assert isinstance(body["error"]["message"], str), body
    if code is not None:
        assert body["error"]["code"] == code, body


class System:
    """The public API of the running system, as a client sees it."""

    def __init__(self, running: RunningSystem) -> None:
        env = running.env
        self.kafka = env["KAFKA_BOOTSTRAP_SERVERS"]
        self.wallet = f"http://127.0.0.1:{env['WALLET_HTTP_PORT']}"
        self.gateway = f"http://127.0.0.1:{env['IPN_GATEWAY_HTTP_PORT']}"
        self.p2p = f"http://127.0.0.1:{env['P2P_HTTP_PORT']}"
        self.trading = f"http://127.0.0.1:{env['TRADING_HTTP_PORT']}"
        self.simulator = f"http://127.0.0.1:{env['NOWPAYMENTS_SIMULATOR_PORT']}"
        self.mongodb_url = f"mongodb://127.0.0.1:{running.ports[-1]}/?directConnection=true"
        self.http = httpx.Client(timeout=20.0)
        self.admin = self.new_user("admin")
        # Made when the module starts and checked by its last tests, so that waiting for their
        # clocks (a 30 s quote, a 1 minute payment window) overlaps the other tests.
        self.early_express_quote: dict[str, Any] = {}
        self.deadline_trade: dict[str, Any] = {}
        self.fresh_command_statuses: list[tuple[str, str]] = []

    @staticmethod
    def new_user(role: str) -> str:
        return f"acc-{role}-{uuid.uuid4().hex[:10]}"

    def headers(self, user: str | None) -> dict[str, str]:
        if user is None:
            return {}
        roles = ["admin"] if user == self.admin else []
        return {"Authorization": f"Bearer {make_token(DEV_JWT_SECRET, user, roles)}"}

    def call(self, method: str, url: str, user: str | None, body: Any = None) -> httpx.Response:
        return self.http.request(method, url, json=body, headers=self.headers(user))

    def ok(
        self, method: str, url: str, user: str | None, body: Any = None, status: int = 200
    ) -> Any:
        response = self.call(method, url, user, body)
        assert response.status_code == status, (method, url, response.status_code, response.text)
        return response.json()

    # -- reading --------------------------------------------------------------------------------

    def balances(self, user: str) -> dict[str, dict[str, Decimal]]:
        body = self.ok("GET", f"{self.wallet}/api/wallets/balances/{user}", user)
        return {
            row["currency"]: {k: D(v) for k, v in row.items() if k.endswith("_balance")}
            for row in body["balances"]
        }

    def balance(self, user: str, currency: str, bucket: str = "available") -> Decimal:
        return self.balances(user).get(currency, {}).get(f"{bucket}_balance", Decimal(0))

    def platform(self, account: str, currency: str) -> Decimal:
        body = self.ok("GET", f"{self.wallet}/api/wallets/platform-balances", self.admin)
        for row in body["accounts"]:
            if row["account"] == account and row["currency"] == currency:
                return D(row["balance"])
        return Decimal(0)

    def settled(self, url: str, user: str, final: set[str], within: float = 30.0) -> Any:
        def done() -> Any:
            body = self.ok("GET", url, user)
            return body if body["status"] in final else None

        return until(f"{url} in {final}", done, within)

    def prices(self) -> dict[str, Decimal]:
        body = self.ok("GET", f"{self.trading}/api/prices", None)
        return {row["currency"]: D(row["price"]) for row in body["prices"]}

    # -- funding --------------------------------------------------------------------------------

    def deposit_crypto(self, user: str, amount: str, ticker: str = "btc") -> None:
        """A deposit through the gateway and the simulator's IPN, as NOWPayments would send it."""
        currency = NOWPAYMENTS_TICKERS.get(ticker, ticker.upper())
        before = self.balance(user, currency)
        created = self.ok(
            "POST",
            f"{self.gateway}/api/nowpayments/create-deposit",
            user,
            {"currency": ticker, "amount": "100", "price_currency": "usd"},
        )
        fired = self.http.post(
            f"{self.simulator}/simulator/payments/{created['payment_id']}/ipn",
            json={"status": "finished", "actually_paid": amount, "outcome_amount": amount},
        )
        assert fired.status_code == 200, fired.text
        until(
            f"{user} {currency} deposit",
            lambda: self.balance(user, currency) == before + D(amount),
            30.0,
        )

    def deposit_bank(self, user: str, currency: str, amount: str) -> str:
        """A fresh credit, sent once. Its money must land exactly once; the status the wallet
        answered is kept for `test_zz_a_fresh_command_is_answered_applied`."""
        reference = f"bank-{uuid.uuid4().hex}"
        before = self.balance(user, currency)

        async def send() -> Any:
            topics = Topics("")
            async with WalletClient(self.kafka, topics=topics, timeout=30.0) as wallet:
                return await wallet.credit(
                    user_id=user,
                    currency=currency,
                    amount=amount,
                    transaction_type="deposit_bank_transfer",
                    reference_id=reference,
                    metadata={"source": "acceptance"},
                )

        result = asyncio.run(send())
        assert result is not None, result
        self.fresh_command_statuses.append((reference, result.status))
        assert result.status in {"applied", "duplicate"}, result
        assert self.balance(user, currency) == before + D(amount), result
        return reference

    def fund_liquidity(self, currency: str, amount: str) -> None:
        before = self.platform("platform:liquidity", currency)
        body = self.ok(
            "POST",
            f"{self.trading}/api/admin/liquidity",
            self.admin,
            {"currency": currency, "amount": amount, "reference_id": uuid.uuid4().hex},
            status=202,
        )
        assert body["status"] == "pending", body
        until(
            f"liquidity {currency}",
            lambda: self.platform("platform:liquidity", currency) == before + D(amount),
            60.0,  # the contract gives no bound; a loaded machine has taken over 30 s
        )


@pytest.fixture(scope="module")
def system(running_system_for_module: RunningSystem) -> Iterator[System]:
    api = System(running_system_for_module)
    for currency, price in PINNED.items():
        api.ok(
            "PUT",
            f"{api.trading}/api/admin/prices",
            api.admin,
            {"currency": currency, "price": price},
        )
    until(
        "pinned prices published",
        lambda: all(api.prices().get(c) == D(p) for c, p in PINNED.items()),
        10.0,
    )
    time.sleep(2.0)  # "every service sees it within 2 s"
    start_the_clocks(api)
    try:
        yield api
    finally:
        api.http.close()


def start_the_clocks(api: System) -> None:
    early = api.new_user("early")
    api.early_express_quote = api.ok(
        "POST",
        f"{api.trading}/api/express-buy/quote",
        early,
        {"fiat_currency": "GBP", "fiat_amount": "10.00", "crypto_currency": "BTC"},
    )
    api.early_express_quote.update(made=time.monotonic(), user=early)
    seller, buyer = api.new_user("lateseller"), api.new_user("latebuyer")
    api.deposit_crypto(seller, "0.002")
    offer = api.ok(
        "POST",
        f"{api.p2p}/api/p2p/enhanced/offers",
        seller,
        {
            "currency": "BTC",
            "fiat_currency": "GBP",
            "price": "50000.00",
            "min_amount": "0.001",
            "max_amount": "0.001",
            "payment_methods": ["bank_transfer"],
            "payment_window_minutes": 1,
        },
        status=201,
    )
    api.deadline_trade = api.ok(
        "POST",
        f"{api.p2p}/api/p2p/enhanced/create-trade",
        buyer,
        {"offer_id": offer["offer_id"], "amount": "0.001"},
        status=202,
    )


# -- authentication and errors -------------------------------------------------------------------


def test_wave2_routes_answer_401_without_a_token(system: System) -> None:
    routes = [
        ("POST", f"{system.trading}/api/swap/quote"),
        ("POST", f"{system.trading}/api/swap/execute"),
        ("POST", f"{system.trading}/api/express-buy/quote"),
        ("POST", f"{system.trading}/api/trading/execute"),
        ("GET", f"{system.trading}/api/trading/orders?status=open"),
        ("POST", f"{system.trading}/api/savings/transfer"),
        ("GET", f"{system.trading}/api/savings/positions"),
        ("POST", f"{system.trading}/api/referrals/bind"),
        ("GET", f"{system.trading}/api/referrals/summary"),
        ("PUT", f"{system.trading}/api/admin/prices"),
        ("POST", f"{system.trading}/api/admin/liquidity"),
        ("POST", f"{system.trading}/api/admin/savings/accrue"),
        ("POST", f"{system.p2p}/api/p2p/enhanced/offers"),
        ("GET", f"{system.p2p}/api/p2p/enhanced/trades"),
        ("GET", f"{system.wallet}/api/wallets/platform-balances"),
        ("GET", f"{system.wallet}/api/wallets/portfolio/someone?currency=GBP"),
    ]
    for method, url in routes:
        assert_error(system.call(method, url, None, {}), 401)


def test_admin_routes_answer_403_to_non_admins(system: System) -> None:
    user = system.new_user("plain")
    calls = [
        ("PUT", f"{system.trading}/api/admin/prices", {"currency": "BTC", "price": "1.00"}),
        ("DELETE", f"{system.trading}/api/admin/prices/BTC", None),
        (
            "POST",
            f"{system.trading}/api/admin/liquidity",
            {"currency": "ETH", "amount": "1", "reference_id": uuid.uuid4().hex},
        ),
        ("POST", f"{system.trading}/api/admin/savings/accrue", {"date": "2026-11-29"}),
        ("GET", f"{system.wallet}/api/wallets/platform-balances", None),
    ]
    for method, url, body in calls:
        assert_error(system.call(method, url, user, body), 403)
    assert system.prices()["BTC"] == D(PINNED["BTC"])  # the refused pin/unpin changed nothing


# -- prices and platform accounts -----------------------------------------------------------------


def test_prices_are_gbp_decimal_strings_with_the_pinned_values(system: System) -> None:
    body = system.ok("GET", f"{system.trading}/api/prices", None)
    assert body["valuation_currency"] == "GBP"
    assert isinstance(body["as_of"], str)
    assert body["as_of"]
    by_currency = {row["currency"]: row for row in body["prices"]}
    assert len(by_currency) == len(body["prices"]), "one price per currency"
    for row in body["prices"]:
        assert {"currency", "price", "as_of", "source"} <= set(row), row
        assert isinstance(row["price"], str), row
        assert D(row["price"]) > 0, row
    assert D(by_currency["GBP"]["price"]) == 1
    for currency, price in PINNED.items():
        assert D(by_currency[currency]["price"]) == D(price)


def test_platform_balances_shape(system: System) -> None:
    system.fund_liquidity("ETH", "1.5")
    body = system.ok("GET", f"{system.wallet}/api/wallets/platform-balances", system.admin)
    assert set(body) == {"accounts"}
    assert body["accounts"], body
    for row in body["accounts"]:
        assert set(row) == {"account", "currency", "balance"}, row
        assert row["account"].startswith(("platform:", "external:")), row
        assert within_scale(row["balance"], row["currency"]), row
    accounts = {row["account"] for row in body["accounts"]}
    assert {"platform:liquidity", "external:treasury"} <= accounts


# -- swap -------------------------------------------------------------------------------------------


def swap_figures(from_amount: str, prices: dict[str, Decimal]) -> tuple[Decimal, Decimal, Decimal]:
    fee = up(D(from_amount) * D("0.001"), "BTC")
    rate = (prices["BTC"] / prices["ETH"] * (1 - D("0.005"))).quantize(
        RATE_PLACES, rounding=ROUND_FLOOR
    )
    to_amount = down((D(from_amount) - fee) * rate, "ETH")
    return fee, rate, to_amount


def test_swap_quote_execute_and_refusals(system: System) -> None:
    alice, mallory = system.new_user("swapper"), system.new_user("mallory")
    system.deposit_crypto(alice, "0.05")
    system.fund_liquidity("ETH", "5")
    quote_url, execute_url = (
        f"{system.trading}/api/swap/quote",
        f"{system.trading}/api/swap/execute",
    )
    request = {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.0123457"}
    expiring = system.ok("POST", quote_url, alice, request)
    expiring_made = time.monotonic()

    quote = system.ok("POST", quote_url, alice, request)
    fee, rate, to_amount = swap_figures("0.0123457", system.prices())
    assert {
        "quote_id",
        "from_currency",
        "to_currency",
        "from_amount",
        "fee",
        "fee_currency",
        "rate",
        "to_amount",
        "expires_at",
    } <= set(quote)
    assert (quote["from_currency"], quote["to_currency"], quote["fee_currency"]) == (
        "BTC",
        "ETH",
        "BTC",
    )
    assert D(quote["from_amount"]) == D("0.0123457")
    assert within_scale(quote["fee"], "BTC")
    assert D(quote["fee"]) == fee == D("0.00001235")
    assert isinstance(quote["rate"], str)
    assert D(quote["rate"]) == rate
    assert within_scale(quote["to_amount"], "ETH")
    assert D(quote["to_amount"]) == to_amount

    # Someone else's quote: 404.
    assert_error(system.call("POST", execute_url, mallory, {"quote_id": quote["quote_id"]}), 404)

    fees_before = system.platform("platform:fees", "BTC")
    liquidity_btc = system.platform("platform:liquidity", "BTC")
    liquidity_eth = system.platform("platform:liquidity", "ETH")
    started = system.ok("POST", execute_url, alice, {"quote_id": quote["quote_id"]}, status=202)
    assert started["status"] == "pending", started
    assert started["swap_id"], started
    assert D(started["to_amount"]) == to_amount
    assert D(started["fee"]) == fee
    assert_error(
        system.call("POST", execute_url, alice, {"quote_id": quote["quote_id"]}), 409, "quote_used"
    )
    done = system.settled(
        f"{system.trading}/api/swap/{started['swap_id']}", alice, {"completed", "failed"}
    )
    assert done["status"] == "completed", done
    assert system.balance(alice, "BTC") == D("0.05") - D("0.0123457")
    assert system.balance(alice, "ETH") == to_amount
    assert system.platform("platform:fees", "BTC") == fees_before + fee
    assert system.platform("platform:liquidity", "BTC") == liquidity_btc + D("0.0123457") - fee
    assert system.platform("platform:liquidity", "ETH") == liquidity_eth - to_amount
    assert_error(
        system.call("POST", execute_url, alice, {"quote_id": quote["quote_id"]}), 409, "quote_used"
    )

    # More than the user has: failed, insufficient_funds, nothing moves.
    too_much = system.ok("POST", quote_url, alice, {**request, "from_amount": "1"})
    started = system.ok("POST", execute_url, alice, {"quote_id": too_much["quote_id"]}, status=202)
    failed = system.settled(
        f"{system.trading}/api/swap/{started['swap_id']}", alice, {"completed", "failed"}
    )
    assert (failed["status"], failed["reason"]) == ("failed", "insufficient_funds"), failed
    assert system.balance(alice, "BTC") == D("0.05") - D("0.0123457")

    # Bad input: 4xx with a code, never a 5xx.
    for bad in (
        {**request, "from_amount": "0.000000001"},  # beyond BTC's 8 places
        {**request, "from_amount": "-1"},
        {**request, "to_currency": "NOPE"},
        {**request, "from_amount": 0.01},  # a JSON number
    ):
        response = system.call("POST", quote_url, alice, bad)
        assert_error(response, set(range(400, 500)))

    # A quote is firm for 10 s only.
    time.sleep(max(0.0, 10.5 - (time.monotonic() - expiring_made)))
    assert_error(
        system.call("POST", execute_url, alice, {"quote_id": expiring["quote_id"]}),
        409,
        "quote_expired",
    )


# -- express buy ------------------------------------------------------------------------------------


def test_express_buy_quote_and_execute(system: System) -> None:
    carol = system.new_user("buyer")
    system.deposit_bank(carol, "GBP", "150.00")
    system.fund_liquidity("BTC", "0.5")
    quote = system.ok(
        "POST",
        f"{system.trading}/api/express-buy/quote",
        carol,
        {"fiat_currency": "GBP", "fiat_amount": "100.01", "crypto_currency": "BTC"},
    )
    price = system.prices()["BTC"]
    fee = up(D("100.01") * D("0.015"), "GBP")
    rate = (1 / price * (1 - D("0.01"))).quantize(RATE_PLACES, rounding=ROUND_FLOOR)
    crypto = down((D("100.01") - fee) * rate, "BTC")
    assert {
        "quote_id",
        "fiat_currency",
        "fiat_amount",
        "fee",
        "rate",
        "crypto_currency",
        "crypto_amount",
        "expires_at",
    } <= set(quote)
    assert (quote["fiat_currency"], quote["crypto_currency"]) == ("GBP", "BTC")
    assert within_scale(quote["fee"], "GBP")
    assert D(quote["fee"]) == fee == D("1.51")
    assert D(quote["rate"]) == rate
    assert within_scale(quote["crypto_amount"], "BTC")
    assert D(quote["crypto_amount"]) == crypto

    fees_before = system.platform("platform:fees", "GBP")
    liquidity_gbp = system.platform("platform:liquidity", "GBP")
    liquidity_btc = system.platform("platform:liquidity", "BTC")
    execute_url = f"{system.trading}/api/express-buy/execute"
    started = system.ok("POST", execute_url, carol, {"quote_id": quote["quote_id"]}, status=202)
    assert started["status"] == "pending", started
    assert started["order_id"], started
    done = system.settled(
        f"{system.trading}/api/express-buy/{started['order_id']}", carol, {"completed", "failed"}
    )
    assert done["status"] == "completed", done
    assert system.balance(carol, "GBP") == D("150.00") - D("100.01")
    assert system.balance(carol, "BTC") == crypto
    assert system.platform("platform:fees", "GBP") == fees_before + fee
    assert system.platform("platform:liquidity", "GBP") == liquidity_gbp + D("100.01") - fee
    assert system.platform("platform:liquidity", "BTC") == liquidity_btc - crypto
    assert_error(
        system.call("POST", execute_url, carol, {"quote_id": quote["quote_id"]}), 409, "quote_used"
    )


# -- spot -------------------------------------------------------------------------------------------


def test_markets_list_the_contract_pairs(system: System) -> None:
    body = system.ok("GET", f"{system.trading}/api/trading/markets", None)
    markets = {row["pair"]: row for row in body["items"]}
    assert {"BTC-GBP", "ETH-GBP", "ETH-BTC", "BTC-USDT"} <= set(markets)
    btc_gbp = markets["BTC-GBP"]
    assert (btc_gbp["base"], btc_gbp["quote"]) == ("BTC", "GBP")
    assert D(btc_gbp["price_tick"]) == D("0.01")
    assert D(btc_gbp["amount_step"]) == D("0.00001")
    assert D(btc_gbp["min_amount"]) == D("0.0001")
    for row in body["items"]:
        assert {"pair", "base", "quote", "price_tick", "amount_step", "min_amount"} <= set(row)


def test_spot_limit_orders_cross_at_the_makers_price(system: System) -> None:
    seller, buyer = system.new_user("maker"), system.new_user("taker")
    system.deposit_crypto(seller, "0.01")
    system.deposit_bank(buyer, "GBP", "1000.00")
    orders_url = f"{system.trading}/api/trading/orders"

    def place(user: str, side: str, amount: str, price: str) -> dict[str, Any]:
        body = {"pair": "BTC-GBP", "side": side, "type": "limit", "amount": amount, "price": price}
        placed: dict[str, Any] = system.ok(
            "POST", f"{system.trading}/api/trading/execute", user, body, status=202
        )
        assert placed["order_id"], placed
        assert placed["status"], placed
        return placed

    def order(user: str, order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = system.ok("GET", f"{orders_url}/{order_id}", user)
        return result

    def resting(user: str, order_id: str) -> dict[str, Any]:
        return until(  # type: ignore[no-any-return]
            f"order {order_id} in the book",
            lambda: (o := order(user, order_id))["status"] not in {"pending"} and o,
        )

    first = place(seller, "sell", "0.001", "40000.00")
    assert resting(seller, first["order_id"])["status"] == "open"
    second = place(seller, "sell", "0.001", "40000.00")
    third = place(seller, "sell", "0.001", "40100.00")
    for placed in (second, third):
        assert resting(seller, placed["order_id"])["status"] == "open"
    assert system.balance(seller, "BTC", "locked") == D("0.003")
    book = system.ok("GET", f"{system.trading}/api/trading/orderbook/BTC-GBP", None)
    assert [[D(p), D(a)] for p, a in book["asks"]] == [
        [D("40000.00"), D("0.002")],
        [D("40100.00"), D("0.001")],
    ]
    assert book["bids"] == []

    fees_gbp = system.platform("platform:fees", "GBP")
    fees_btc = system.platform("platform:fees", "BTC")
    taker = place(buyer, "buy", "0.0015", "40200.00")
    filled = until(
        "taker filled",
        lambda: (o := order(buyer, taker["order_id"]))["status"] == "filled" and o,
    )
    assert {
        "order_id",
        "pair",
        "side",
        "type",
        "price",
        "amount",
        "filled_amount",
        "status",
        "reason",
        "fills",
    } <= set(filled)
    assert D(filled["filled_amount"]) == D("0.0015")
    fills = [
        (D(f["price"]), D(f["amount"]), D(f["fee"]), f["fee_currency"]) for f in filled["fills"]
    ]
    # Price-time priority, at the maker's price; the taker's fee (0.002) from the BTC it receives.
    assert fills == [
        (D("40000.00"), D("0.001"), D("0.000002"), "BTC"),
        (D("40000.00"), D("0.0005"), D("0.000001"), "BTC"),
    ]
    for f in filled["fills"]:
        assert f["trade_id"], f
    # Paid 60.00 of the 60.30 locked: the difference is unlocked.
    until("buyer settled", lambda: system.balance(buyer, "BTC") == D("0.001497"))
    assert system.balance(buyer, "GBP") == D("940.00")
    assert system.balance(buyer, "GBP", "locked") == 0
    # The maker's fee (0.001) from the GBP it receives, rounded up.
    until("seller settled", lambda: system.balance(seller, "GBP") == D("59.94"))
    assert system.balance(seller, "BTC", "locked") == D("0.0015")
    assert system.platform("platform:fees", "GBP") == fees_gbp + D("0.06")
    assert system.platform("platform:fees", "BTC") == fees_btc + D("0.000003")
    assert order(seller, first["order_id"])["status"] == "filled"
    assert order(seller, second["order_id"])["status"] == "partially_filled"

    low = place(buyer, "buy", "0.001", "39000.00")
    high = place(buyer, "buy", "0.002", "39500.00")
    for placed in (low, high):
        assert resting(buyer, placed["order_id"])["status"] == "open"
    book = system.ok("GET", f"{system.trading}/api/trading/orderbook/BTC-GBP", None)
    assert [[D(p), D(a)] for p, a in book["bids"]] == [
        [D("39500.00"), D("0.002")],
        [D("39000.00"), D("0.001")],
    ]
    assert [[D(p), D(a)] for p, a in book["asks"]] == [
        [D("40000.00"), D("0.0005")],
        [D("40100.00"), D("0.001")],
    ]
    assert system.balance(buyer, "GBP", "locked") == D("118.00")

    # Someone else's order: 403 or 404.
    for method in ("GET", "DELETE"):
        response = system.call(method, f"{orders_url}/{low['order_id']}", seller)
        assert_error(response, {403, 404})
    cancelled = system.call("DELETE", f"{orders_url}/{low['order_id']}", buyer)
    assert cancelled.status_code in {200, 202}, cancelled.text
    assert cancelled.json()["order_id"] == low["order_id"]
    done = until(
        "cancelled",
        lambda: (o := order(buyer, low["order_id"]))["status"] == "cancelled" and o,
    )
    assert done["reason"] == "user_cancelled"
    until("unlocked", lambda: system.balance(buyer, "GBP", "locked") == D("79.00"))

    open_ids = {
        o["order_id"] for o in system.ok("GET", f"{orders_url}?status=open", buyer)["items"]
    }
    closed_ids = {
        o["order_id"] for o in system.ok("GET", f"{orders_url}?status=closed", buyer)["items"]
    }
    assert open_ids == {high["order_id"]}
    assert closed_ids == {taker["order_id"], low["order_id"]}

    # Cancelling a partly filled order keeps its fills and unlocks only the open remainder.
    answer = system.call("DELETE", f"{orders_url}/{second['order_id']}", seller)
    assert answer.status_code in {200, 202}, answer.text
    done = until(
        "remainder cancelled",
        lambda: (o := order(seller, second["order_id"]))["status"] == "cancelled" and o,
    )
    assert D(done["filled_amount"]) == D("0.0005")
    assert [D(f["amount"]) for f in done["fills"]] == [D("0.0005")]
    until("remainder unlocked", lambda: system.balance(seller, "BTC", "locked") == D("0.001"))
    assert system.balance(seller, "BTC") == D("0.007") + D("0.0005")


# -- savings ------------------------------------------------------------------------------------------


def test_savings_transfer_positions_and_idempotent_accrual(system: System) -> None:
    saver = system.new_user("saver")
    products = system.ok("GET", f"{system.trading}/api/savings/products", saver)
    aprs = {row["currency"]: D(row["apr"]) for row in products["items"]}
    for row in products["items"]:
        assert isinstance(row["apr"], str), row
    assert "BTC" in aprs, products
    system.deposit_crypto(saver, "0.02")
    started = system.ok(
        "POST",
        f"{system.trading}/api/savings/transfer",
        saver,
        {"currency": "BTC", "amount": "0.015", "direction": "to_savings"},
        status=202,
    )
    assert started["status"] == "pending", started
    assert started["transfer_id"], started
    done = system.settled(
        f"{system.trading}/api/savings/transfers/{started['transfer_id']}",
        saver,
        {"completed", "failed"},
    )
    assert done["status"] == "completed", done
    assert system.balance(saver, "BTC") == D("0.005")
    assert system.balance(saver, "BTC", "savings") == D("0.015")
    assert system.balance(saver, "BTC", "total") == D("0.005")  # available + locked, as in the seed

    back = system.ok(
        "POST",
        f"{system.trading}/api/savings/transfer",
        saver,
        {"currency": "BTC", "amount": "0.005", "direction": "to_wallet"},
        status=202,
    )
    done = system.settled(
        f"{system.trading}/api/savings/transfers/{back['transfer_id']}",
        saver,
        {"completed", "failed"},
    )
    assert done["status"] == "completed", done
    assert system.balance(saver, "BTC", "savings") == D("0.010")

    # Someone else's transfer: 403 or 404.
    outsider = system.new_user("outsider")
    assert_error(
        system.call(
            "GET", f"{system.trading}/api/savings/transfers/{back['transfer_id']}", outsider
        ),
        {403, 404},
    )

    now = datetime.now(UTC)
    today = now.date().isoformat()
    accrue_url = f"{system.trading}/api/admin/savings/accrue"
    # Yesterday ended before the saver had savings: nothing for that day.
    yesterday = (now - timedelta(days=1)).date().isoformat()
    system.ok("POST", accrue_url, system.admin, {"date": yesterday})
    paid_out = system.platform("platform:interest", "BTC")
    system.ok("POST", accrue_url, system.admin, {"date": today})
    interest = down(D("0.010") * aprs["BTC"] / 365, "BTC")
    assert interest > 0
    until(
        "interest paid",
        lambda: system.balance(saver, "BTC", "savings") == D("0.010") + interest,
    )
    # Other savers of this module may be paid by the same run: at least this saver's share left.
    assert system.platform("platform:interest", "BTC") <= paid_out - interest
    system.ok("POST", accrue_url, system.admin, {"date": today})
    time.sleep(2.0)
    assert system.balance(saver, "BTC", "savings") == D("0.010") + interest

    positions = system.ok("GET", f"{system.trading}/api/savings/positions", saver)
    btc = [row for row in positions["items"] if row["currency"] == "BTC"]
    assert len(btc) == 1, positions
    assert set(btc[0]) >= {"currency", "savings_balance", "interest_earned"}
    assert D(btc[0]["savings_balance"]) == D("0.010") + interest
    assert D(btc[0]["interest_earned"]) == interest
    assert within_scale(btc[0]["savings_balance"], "BTC")


# -- referrals ------------------------------------------------------------------------------------


def test_referral_bind_rules_and_commission(system: System) -> None:
    referrer, invitee = system.new_user("referrer"), system.new_user("invitee")
    bind_url = f"{system.trading}/api/referrals/bind"
    assert_error(
        system.call("POST", bind_url, invitee, {"referrer_id": invitee}), 400, "self_referral"
    )
    system.ok("POST", bind_url, invitee, {"referrer_id": referrer})
    assert_error(
        system.call("POST", bind_url, invitee, {"referrer_id": system.new_user("other")}),
        409,
        "already_bound",
    )
    summary = system.ok("GET", f"{system.trading}/api/referrals/summary", invitee)
    assert summary["referrer_id"] == referrer

    system.deposit_crypto(invitee, "0.02")
    system.fund_liquidity("ETH", "2")
    quote = system.ok(
        "POST",
        f"{system.trading}/api/swap/quote",
        invitee,
        {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.01"},
    )
    fee = D(quote["fee"])
    started = system.ok(
        "POST", f"{system.trading}/api/swap/execute", invitee, {"quote_id": quote["quote_id"]}, 202
    )
    done = system.settled(
        f"{system.trading}/api/swap/{started['swap_id']}", invitee, {"completed", "failed"}
    )
    assert done["status"] == "completed", done
    commission = down(fee * D("0.20"), "BTC")
    until("commission paid", lambda: system.balance(referrer, "BTC") == commission)
    # The summary follows the wallet's results: it may lag the wallet's own view briefly.
    summary = until(
        "commission in the summary",
        lambda: (
            (body := system.ok("GET", f"{system.trading}/api/referrals/summary", referrer))[
                "earned"
            ]
            and body
        ),
        10.0,
    )
    assert summary["referrer_id"] is None
    assert summary["invitees"] == 1
    assert [(e["currency"], D(e["amount"])) for e in summary["earned"]] == [("BTC", commission)]
    rows = system.ok(
        "GET", f"{system.wallet}/api/wallets/transactions/{referrer}?currency=BTC", referrer
    )["items"]
    paid = [row for row in rows if row.get("transaction_type") == "referral_commission"]
    assert len(paid) == 1, rows
    assert {
        "referred_user_id",
        "source_transaction_id",
        "source_transaction_type",
        "fee",
        "rate",
    } <= set(paid[0]["metadata"])
    assert paid[0]["metadata"]["referred_user_id"] == invitee


# -- P2P ------------------------------------------------------------------------------------------------


def test_p2p_trade_figures_and_state_rules(system: System) -> None:
    seller, buyer, outsider = (system.new_user(r) for r in ("p2pseller", "p2pbuyer", "p2pout"))
    system.deposit_crypto(seller, "0.01")
    base = f"{system.p2p}/api/p2p/enhanced"
    offer = system.ok(
        "POST",
        f"{base}/offers",
        seller,
        {
            "currency": "BTC",
            "fiat_currency": "GBP",
            "price": "50000.00",
            "min_amount": "0.001",
            "max_amount": "0.005",
            "payment_methods": ["bank_transfer"],
            "payment_window_minutes": 15,
        },
        status=201,
    )
    assert offer["status"] == "active", offer
    assert offer["offer_id"], offer
    listed = system.ok("GET", f"{base}/offers?currency=BTC", buyer)["items"]
    assert offer["offer_id"] in {o["offer_id"] for o in listed}
    assert system.balance(seller, "BTC", "locked") == 0  # an offer locks nothing

    own = system.call(
        "POST", f"{base}/create-trade", seller, {"offer_id": offer["offer_id"], "amount": "0.001"}
    )
    assert_error(own, 403)

    trade = system.ok(
        "POST",
        f"{base}/create-trade",
        buyer,
        {"offer_id": offer["offer_id"], "amount": "0.0010005"},
        status=202,
    )
    for key in ("trade_id", "status", "amount", "fee", "fiat_amount", "seller_id", "buyer_id"):
        assert key in trade, trade
    assert "payment_deadline" in trade
    assert trade["status"] == "pending_escrow"
    assert (trade["seller_id"], trade["buyer_id"]) == (seller, buyer)
    # 0.0010005 × 50000.00 = 50.025 → half-up 50.03; fee 0.0000010005 → up 0.00000101.
    assert D(trade["fiat_amount"]) == D("50.03")
    assert within_scale(trade["fiat_amount"], "GBP")
    assert D(trade["fee"]) == D("0.00000101")
    assert within_scale(trade["fee"], "BTC")
    trade_url = f"{base}/trades/{trade['trade_id']}"
    system.settled(trade_url, buyer, {"escrowed", "failed"})
    assert system.ok("GET", trade_url, buyer)["status"] == "escrowed"
    assert system.balance(seller, "BTC", "locked") == D("0.00100151")

    assert_error(system.call("GET", trade_url, outsider), {403, 404})
    body = {"trade_id": trade["trade_id"]}
    assert_error(system.call("POST", f"{base}/release-crypto", seller, body), 409, "not_paid")
    assert_error(system.call("POST", f"{base}/cancel-trade", seller, {**body, "reason": "no"}), 403)
    paid = system.ok("POST", f"{base}/mark-paid", buyer, body)
    assert paid["status"] == "paid"
    fees_before = system.platform("platform:fees", "BTC")
    released = system.call("POST", f"{base}/release-crypto", seller, body)
    assert released.status_code in {200, 202}, released.text
    assert released.json()["trade_id"] == trade["trade_id"]
    assert released.json()["status"] in {"releasing", "completed"}, released.json()
    system.settled(trade_url, seller, {"completed"})
    assert system.balance(buyer, "BTC") == D("0.0010005")
    assert system.balance(seller, "BTC", "locked") == 0
    assert system.balance(seller, "BTC") == D("0.01") - D("0.00100151")
    assert system.platform("platform:fees", "BTC") == fees_before + D("0.00000101")
    again = system.call("POST", f"{base}/release-crypto", seller, body)
    assert again.status_code in {200, 202}, again.text  # idempotent
    assert system.balance(buyer, "BTC") == D("0.0010005")
    mine = system.ok("GET", f"{base}/trades", buyer)["items"]
    assert [t["trade_id"] for t in mine] == [trade["trade_id"]]


# -- wallet read side -------------------------------------------------------------------------------


def test_wallet_read_side(system: System) -> None:
    nobody, dora = system.new_user("nobody"), system.new_user("dora")
    assert system.ok("GET", f"{system.wallet}/api/wallets/balances/{nobody}", nobody) == {
        "user_id": nobody,
        "balances": [],
    }
    assert_error(system.call("GET", f"{system.wallet}/api/wallets/balances/{dora}", nobody), 403)

    before = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    first = system.deposit_bank(dora, "GBP", "10.00")
    time.sleep(0.05)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    second = system.deposit_bank(dora, "GBP", "5.50")
    system.deposit_crypto(dora, "0.001")
    at_url = f"{system.wallet}/api/wallets/balances/{dora}"
    past = system.http.get(at_url, params={"at": before}, headers=system.headers(dora))
    assert past.status_code == 200, past.text
    assert all(D(row["total_balance"]) == 0 for row in past.json()["balances"]), past.json()
    middle = system.http.get(at_url, params={"at": between}, headers=system.headers(dora))
    assert [(r["currency"], D(r["available_balance"])) for r in middle.json()["balances"]] == [
        ("GBP", D("10.00"))
    ], middle.json()
    now = system.http.get(
        at_url, params={"at": datetime.now(UTC).isoformat()}, headers=system.headers(dora)
    )
    gbp = [row for row in now.json()["balances"] if row["currency"] == "GBP"]
    assert D(gbp[0]["available_balance"]) == D("15.50"), now.json()

    rows = system.http.get(
        f"{system.wallet}/api/wallets/transactions/{dora}",
        params={"reference_id": first},
        headers=system.headers(dora),
    ).json()["items"]
    assert len(rows) == 1, rows
    assert rows[0]["reference_id"] == first, rows
    assert second != first

    def portfolio() -> Any:
        body = system.ok("GET", f"{system.wallet}/api/wallets/portfolio/{dora}?currency=GBP", dora)
        btc = [a for a in body["assets"] if a["currency"] == "BTC"]
        return body if btc and btc[0]["price"] and D(btc[0]["price"]) == D(PINNED["BTC"]) else None

    body = until("portfolio with the pinned price", portfolio, 10.0)
    assert {
        "user_id",
        "valuation_currency",
        "prices_as_of",
        "total_value",
        "assets",
        "allocation",
        "unpriced",
    } <= set(body)
    assert body["user_id"] == dora
    assert body["valuation_currency"] == "GBP"
    assets = {a["currency"]: a for a in body["assets"]}
    for asset in body["assets"]:
        assert {
            "currency",
            "available_balance",
            "locked_balance",
            "savings_balance",
            "holding",
            "price",
            "value",
            "percentage",
        } <= set(asset)
    # 0.001 BTC × 50000 = 50.00; 15.50 GBP × 1 = 15.50; total 65.50.
    assert D(assets["BTC"]["holding"]) == D("0.001")
    assert D(assets["BTC"]["value"]) == D("50.00")
    assert D(assets["GBP"]["value"]) == D("15.50")
    assert D(body["total_value"]) == D("65.50")
    assert {a["percentage"] for a in body["assets"]} == {"76.34", "23.66"}
    assert sum(D(a["percentage"]) for a in body["assets"]) == D("100.00")
    assert sum(D(a["percentage"]) for a in body["allocation"]) == D("100.00")
    assert [a["label"] for a in body["allocation"]] == ["BTC", "GBP"]
    assert body["unpriced"] == []


@pytest.mark.parametrize(
    "page", ["/wallet", "/portfolio", "/savings", "/allocations", "/transactions"]
)
def test_pages_without_a_token_ask_to_sign_in(system: System, page: str) -> None:
    response = system.http.get(f"{system.wallet}{page}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "sign in" in response.text.lower() or "sign-in" in response.text.lower()


# -- more refusals ------------------------------------------------------------------------------------


def test_a_bad_token_is_401(system: System) -> None:
    forged = make_token(
        "not-the-secret-of-this-system-but-long-enough", system.new_user("forger"), ["admin"]
    )
    for url in (
        f"{system.trading}/api/savings/positions",
        f"{system.trading}/api/referrals/summary",
        f"{system.p2p}/api/p2p/enhanced/trades",
        f"{system.wallet}/api/wallets/platform-balances",
    ):
        response = system.http.get(url, headers={"Authorization": f"Bearer {forged}"})
        assert_error(response, 401)


def test_a_quote_executed_concurrently_completes_once(system: System) -> None:
    eve = system.new_user("racer")
    system.deposit_crypto(eve, "0.01")
    system.fund_liquidity("ETH", "1")
    quote = system.ok(
        "POST",
        f"{system.trading}/api/swap/quote",
        eve,
        {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.004"},
    )

    def execute(_: int) -> httpx.Response:
        with httpx.Client(timeout=20.0) as client:
            return client.post(
                f"{system.trading}/api/swap/execute",
                json={"quote_id": quote["quote_id"]},
                headers=system.headers(eve),
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(execute, range(4)))
    accepted = [a for a in answers if a.status_code == 202]
    assert len(accepted) == 1, [(a.status_code, a.text) for a in answers]
    for refused in (a for a in answers if a.status_code != 202):
        assert_error(refused, 409, "quote_used")
    swap_id = accepted[0].json()["swap_id"]
    done = system.settled(f"{system.trading}/api/swap/{swap_id}", eve, {"completed", "failed"})
    assert done["status"] == "completed", done
    time.sleep(1.0)
    assert system.balance(eve, "BTC") == D("0.006")
    assert system.balance(eve, "ETH") == D(quote["to_amount"])


def test_a_swap_the_liquidity_cannot_cover_fails_and_moves_nothing(system: System) -> None:
    frank = system.new_user("illiquid")
    system.deposit_crypto(frank, "0.01")
    # Far more SOL than anyone funded: the platform's inventory cannot cover it.
    held = system.platform("platform:liquidity", "SOL")
    quote = system.ok(
        "POST",
        f"{system.trading}/api/swap/quote",
        frank,
        {"from_currency": "BTC", "to_currency": "SOL", "from_amount": "0.01"},
    )
    assert D(quote["to_amount"]) > held
    started = system.ok(
        "POST", f"{system.trading}/api/swap/execute", frank, {"quote_id": quote["quote_id"]}, 202
    )
    failed = system.settled(
        f"{system.trading}/api/swap/{started['swap_id']}", frank, {"completed", "failed"}
    )
    assert (failed["status"], failed["reason"]) == ("failed", "insufficient_liquidity"), failed
    assert system.balance(frank, "BTC") == D("0.01")
    assert system.balance(frank, "SOL") == 0
    assert system.platform("platform:liquidity", "SOL") == held


def test_liquidity_funding_is_idempotent_by_reference(system: System) -> None:
    reference = uuid.uuid4().hex
    before = system.platform("platform:liquidity", "LTC")
    body = {"currency": "LTC", "amount": "3", "reference_id": reference}
    url = f"{system.trading}/api/admin/liquidity"
    assert system.ok("POST", url, system.admin, body, status=202)["status"] == "pending"
    until("funded", lambda: system.platform("platform:liquidity", "LTC") == before + 3)
    system.ok("POST", url, system.admin, body, status=202)
    time.sleep(2.0)
    assert system.platform("platform:liquidity", "LTC") == before + 3


def test_express_buy_refusals(system: System) -> None:
    gina, mallory = system.new_user("gina"), system.new_user("mallory")
    quote_url = f"{system.trading}/api/express-buy/quote"
    request = {"fiat_currency": "GBP", "fiat_amount": "20.00", "crypto_currency": "BTC"}
    quote = system.ok("POST", quote_url, gina, request)
    execute_url = f"{system.trading}/api/express-buy/execute"
    assert_error(system.call("POST", execute_url, mallory, {"quote_id": quote["quote_id"]}), 404)
    # No GBP at all: failed, insufficient_funds, nothing moves.
    started = system.ok("POST", execute_url, gina, {"quote_id": quote["quote_id"]}, status=202)
    failed = system.settled(
        f"{system.trading}/api/express-buy/{started['order_id']}", gina, {"completed", "failed"}
    )
    assert (failed["status"], failed["reason"]) == ("failed", "insufficient_funds"), failed
    assert system.balances(gina) == {}
    assert_error(
        system.call("POST", quote_url, gina, {**request, "fiat_amount": "1.001"}),
        set(range(400, 500)),
    )


def test_spot_refusals_market_without_book_self_trade_and_funds(system: System) -> None:
    hank = system.new_user("spotter")
    system.deposit_crypto(hank, "0.01")
    execute_url = f"{system.trading}/api/trading/execute"
    orders_url = f"{system.trading}/api/trading/orders"

    def final(order_id: str) -> dict[str, Any]:
        return system.settled(  # type: ignore[no-any-return]
            f"{orders_url}/{order_id}", hank, {"filled", "cancelled", "failed", "open"}
        )

    # ETH-BTC has no orders: a market buy finds nothing.
    market = system.ok(
        "POST",
        execute_url,
        hank,
        {"pair": "ETH-BTC", "side": "buy", "type": "market", "amount": "0.01"},
        status=202,
    )
    done = final(market["order_id"])
    assert (done["status"], done["reason"]) == ("failed", "no_liquidity"), done
    until("nothing left locked", lambda: system.balance(hank, "BTC", "locked") == 0)

    # More than the user has: failed, insufficient_funds.
    greedy = system.ok(
        "POST",
        execute_url,
        hank,
        {"pair": "BTC-GBP", "side": "sell", "type": "limit", "amount": "1", "price": "60000.00"},
        status=202,
    )
    done = final(greedy["order_id"])
    assert (done["status"], done["reason"]) == ("failed", "insufficient_funds"), done

    # An order never trades with the same user's order: the taker's remainder is cancelled.
    # ETH-GBP: a book no other test of this module uses.
    system.deposit_crypto(hank, "0.1", "eth")
    system.deposit_bank(hank, "GBP", "100.00")
    resting = system.ok(
        "POST",
        execute_url,
        hank,
        {"pair": "ETH-GBP", "side": "sell", "type": "limit", "amount": "0.01", "price": "3000.00"},
        status=202,
    )
    assert final(resting["order_id"])["status"] == "open"
    crossing = system.ok(
        "POST",
        execute_url,
        hank,
        {"pair": "ETH-GBP", "side": "buy", "type": "limit", "amount": "0.01", "price": "3000.00"},
        status=202,
    )
    done = final(crossing["order_id"])
    assert (done["status"], done["reason"]) == ("cancelled", "self_trade"), done
    assert D(done["filled_amount"]) == 0
    until("buy unlocked", lambda: system.balance(hank, "GBP", "locked") == 0)
    assert system.balance(hank, "GBP") == D("100.00")
    assert system.balance(hank, "ETH", "locked") == D("0.01")

    for bad in (
        {
            "pair": "BTC-GBP",
            "side": "buy",
            "type": "limit",
            "amount": "0.001",
            "price": "61000.001",
        },
        {"pair": "NOPE-GBP", "side": "buy", "type": "limit", "amount": "0.001", "price": "1.00"},
        {"pair": "BTC-GBP", "side": "hold", "type": "limit", "amount": "0.001", "price": "1.00"},
        {"pair": "BTC-GBP", "side": "buy", "type": "limit", "amount": "0.00001", "price": "1.00"},
    ):
        assert_error(system.call("POST", execute_url, hank, bad), set(range(400, 500)))
    system.ok("DELETE", f"{orders_url}/{resting['order_id']}", hank)


def test_savings_transfer_beyond_the_balance_fails(system: System) -> None:
    ivy = system.new_user("ivy")
    system.deposit_crypto(ivy, "0.001")
    started = system.ok(
        "POST",
        f"{system.trading}/api/savings/transfer",
        ivy,
        {"currency": "BTC", "amount": "0.002", "direction": "to_savings"},
        status=202,
    )
    done = system.settled(
        f"{system.trading}/api/savings/transfers/{started['transfer_id']}",
        ivy,
        {"completed", "failed"},
    )
    assert done["status"] == "failed", done
    assert system.balance(ivy, "BTC") == D("0.001")
    assert system.balance(ivy, "BTC", "savings") == 0
    assert_error(
        system.call(
            "POST",
            f"{system.trading}/api/savings/transfer",
            ivy,
            {"currency": "BTC", "amount": "0.001", "direction": "sideways"},
        ),
        set(range(400, 500)),
    )


def test_referral_summary_of_a_new_user(system: System) -> None:
    jo = system.new_user("jo")
    assert system.ok("GET", f"{system.trading}/api/referrals/summary", jo) == {
        "referrer_id": None,
        "invitees": 0,
        "earned": [],
    }


def test_p2p_cancel_dispute_and_offer_rules(system: System) -> None:
    seller, buyer, outsider = (system.new_user(r) for r in ("kseller", "kbuyer", "kout"))
    system.deposit_crypto(seller, "0.01")
    base = f"{system.p2p}/api/p2p/enhanced"
    offer_body = {
        "currency": "BTC",
        "fiat_currency": "GBP",
        "price": "50000.00",
        "min_amount": "0.001",
        "max_amount": "0.004",
        "payment_methods": ["bank_transfer"],
        "payment_window_minutes": 15,
    }
    for window in (0, 61):
        bad = system.call(
            "POST", f"{base}/offers", seller, {**offer_body, "payment_window_minutes": window}
        )
        assert_error(bad, set(range(400, 500)))
    offer = system.ok("POST", f"{base}/offers", seller, offer_body, status=201)

    def trade(amount: str) -> tuple[str, str]:
        created = system.ok(
            "POST",
            f"{base}/create-trade",
            buyer,
            {"offer_id": offer["offer_id"], "amount": amount},
            status=202,
        )
        url = f"{base}/trades/{created['trade_id']}"
        system.settled(url, buyer, {"escrowed", "failed"})
        return created["trade_id"], url

    # More than max_amount: refused.
    too_big = system.call(
        "POST", f"{base}/create-trade", buyer, {"offer_id": offer["offer_id"], "amount": "0.005"}
    )
    assert_error(too_big, set(range(400, 500)))

    # The buyer cancels: everything locked for the trade goes back to the seller.
    first, first_url = trade("0.002")
    assert system.balance(seller, "BTC", "locked") == D("0.002002")
    body = {"trade_id": first, "reason": "changed my mind"}
    assert_error(system.call("POST", f"{base}/cancel-trade", outsider, body), {403, 404})
    answer = system.call("POST", f"{base}/cancel-trade", buyer, body)
    assert answer.status_code in {200, 202}, answer.text
    system.settled(first_url, buyer, {"cancelled"})
    assert system.balance(seller, "BTC", "locked") == 0
    assert system.balance(seller, "BTC") == D("0.01")
    assert_error(system.call("POST", f"{base}/mark-paid", buyer, {"trade_id": first}), 409)

    # Disputed, then resolved for the buyer by an admin: as a release.
    second, second_url = trade("0.001")
    system.ok("POST", f"{base}/mark-paid", buyer, {"trade_id": second})
    again = system.ok("POST", f"{base}/mark-paid", buyer, {"trade_id": second})
    assert again["status"] == "paid"
    assert_error(system.call("POST", f"{base}/dispute", outsider, {"trade_id": second}), {403, 404})
    disputed = system.ok("POST", f"{base}/dispute", seller, {"trade_id": second})
    assert disputed["status"] == "disputed"
    assert_error(
        system.call("POST", f"{base}/cancel-trade", buyer, {"trade_id": second, "reason": "x"}),
        409,
    )
    resolve = {"trade_id": second, "outcome": "buyer"}
    assert_error(system.call("POST", f"{base}/resolve-dispute", buyer, resolve), 403)
    answer = system.call("POST", f"{base}/resolve-dispute", system.admin, resolve)
    assert answer.status_code in {200, 202}, answer.text
    system.settled(second_url, buyer, {"completed"})
    assert system.balance(buyer, "BTC") == D("0.001")
    assert system.balance(seller, "BTC", "locked") == 0

    # The seller withdraws the offer: no longer listed.
    assert_error(system.call("DELETE", f"{base}/offers/{offer['offer_id']}", buyer), {403, 404})
    deleted = system.call("DELETE", f"{base}/offers/{offer['offer_id']}", seller)
    assert deleted.status_code in {200, 202, 204}, deleted.text
    listed = system.ok("GET", f"{base}/offers?currency=BTC", buyer)["items"]
    assert offer["offer_id"] not in {o["offer_id"] for o in listed}


def test_p2p_trade_the_seller_cannot_cover_fails_with_nothing_locked(system: System) -> None:
    seller, buyer = system.new_user("poor"), system.new_user("hopeful")
    system.deposit_crypto(seller, "0.001")
    base = f"{system.p2p}/api/p2p/enhanced"
    offer = system.ok(
        "POST",
        f"{base}/offers",
        seller,
        {
            "currency": "BTC",
            "fiat_currency": "GBP",
            "price": "50000.00",
            "min_amount": "0.001",
            "max_amount": "0.5",
            "payment_methods": ["bank_transfer"],
            "payment_window_minutes": 15,
        },
        status=201,
    )
    # 0.001 + its fee is more than the seller holds.
    created = system.ok(
        "POST",
        f"{base}/create-trade",
        buyer,
        {"offer_id": offer["offer_id"], "amount": "0.001"},
        status=202,
    )
    done = system.settled(f"{base}/trades/{created['trade_id']}", buyer, {"escrowed", "failed"})
    assert (done["status"], done.get("reason")) == ("failed", "insufficient_funds"), done
    assert system.balance(seller, "BTC", "locked") == 0
    assert system.balance(seller, "BTC") == D("0.001")


def test_portfolio_groups_beyond_five_assets_and_lists_unpriced_ones(system: System) -> None:
    kim = system.new_user("kim")
    for ticker, amount in (
        ("btc", "0.002"),
        ("eth", "0.05"),
        ("ltc", "1.5"),
        ("sol", "0.3"),
        ("trx", "200"),
        ("usdttrc20", "40"),
    ):
        system.deposit_crypto(kim, amount, ticker)
    system.deposit_bank(kim, "GBP", "7.77")
    system.deposit_bank(kim, "EUR", "5.00")
    body = system.ok("GET", f"{system.wallet}/api/wallets/portfolio/{kim}?currency=GBP", kim)
    assets = {a["currency"]: a for a in body["assets"]}
    assert body["unpriced"] == ["EUR"]
    assert assets["EUR"]["price"] is None
    assert assets["EUR"]["value"] is None
    expected = {c: D(a["holding"]) * D(PINNED.get(c, "1")) for c, a in assets.items() if c != "EUR"}
    for currency, value in expected.items():
        assert D(assets[currency]["price"]) == D(PINNED.get(currency, "1")), assets[currency]
        assert D(assets[currency]["value"]) == value.quantize(D("0.01"), rounding=ROUND_HALF_UP)
    total = sum(expected.values(), Decimal(0))
    assert D(body["total_value"]) == total.quantize(D("0.01"), rounding=ROUND_HALF_UP)
    shares = largest_remainder(expected)
    for currency, share in shares.items():
        assert assets[currency]["percentage"] == share, (currency, assets[currency])
    assert sum(D(a["percentage"]) for a in body["assets"] if a["percentage"]) == D("100.00")
    ranked = sorted(expected, key=lambda c: expected[c], reverse=True)
    assert [a["label"] for a in body["allocation"]] == [*ranked[:5], "Others"]
    others = sum((expected[c] for c in ranked[5:]), Decimal(0))
    assert D(body["allocation"][-1]["value"]) == others.quantize(D("0.01"), rounding=ROUND_HALF_UP)
    assert sum(D(a["percentage"]) for a in body["allocation"]) == D("100.00")
    for row in body["allocation"]:
        assert len(row["percentage"].split(".")[1]) == 2, row


def largest_remainder(values: dict[str, Decimal]) -> dict[str, str]:
    """Percentages with 2 decimals that sum to exactly 100.00 (largest remainder method)."""
    total = sum(values.values(), Decimal(0))
    exact = {k: v / total * 10000 for k, v in values.items()}
    floors = {k: int(v) for k, v in exact.items()}
    missing = 10000 - sum(floors.values())
    for k in sorted(exact, key=lambda k: exact[k] - floors[k], reverse=True)[:missing]:
        floors[k] += 1
    return {k: f"{Decimal(v).scaleb(-2):.2f}" for k, v in floors.items()}


def test_admin_unpins_a_price(system: System) -> None:
    response = system.call("DELETE", f"{system.trading}/api/admin/prices/TRX", system.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    # The built-in feed's own price takes the pin's place at once, and every reader sees it.
    assert (body["currency"], body["pinned"]) == ("TRX", False), body
    assert body["price"] is not None, body
    assert body["price"]["source"] == "builtin", body

    def trx_row() -> dict[str, Any]:
        rows = system.ok("GET", f"{system.trading}/api/prices", None)["prices"]
        return next(row for row in rows if row["currency"] == "TRX")

    row = until(
        "TRX priced by the feed again", lambda: (r := trx_row())["source"] != "pinned" and r
    )
    assert row["source"] == "builtin", row


def test_spot_market_buy_walks_the_book_and_unlocks_what_it_did_not_spend(system: System) -> None:
    seller, buyer = system.new_user("mseller"), system.new_user("mbuyer")
    system.deposit_crypto(seller, "0.01")
    system.deposit_crypto(buyer, "200", "usdttrc20")
    execute_url = f"{system.trading}/api/trading/execute"
    orders_url = f"{system.trading}/api/trading/orders"
    for price in ("60000.00", "61000.00"):
        placed = system.ok(
            "POST",
            execute_url,
            seller,
            {
                "pair": "BTC-USDT",
                "side": "sell",
                "type": "limit",
                "amount": "0.002",
                "price": price,
            },
            status=202,
        )
        system.settled(f"{orders_url}/{placed['order_id']}", seller, {"open"})
    market = system.ok(
        "POST",
        execute_url,
        buyer,
        {"pair": "BTC-USDT", "side": "buy", "type": "market", "amount": "0.003"},
        status=202,
    )
    done = system.settled(
        f"{orders_url}/{market['order_id']}", buyer, {"filled", "cancelled", "failed"}
    )
    assert done["status"] == "filled", done
    assert [(D(f["price"]), D(f["amount"])) for f in done["fills"]] == [
        (D("60000.00"), D("0.002")),
        (D("61000.00"), D("0.001")),
    ]
    # 0.002 × 60000 + 0.001 × 61000 = 181 USDT spent; the rest of what was locked comes back.
    until("market buy settled", lambda: system.balance(buyer, "USDT", "locked") == 0)
    assert system.balance(buyer, "USDT") == D("19")
    assert system.balance(buyer, "BTC") == D("0.003") - D("0.000004") - D("0.000002")
    book = system.ok("GET", f"{system.trading}/api/trading/orderbook/BTC-USDT", None)
    assert [[D(p), D(a)] for p, a in book["asks"]] == [[D("61000.00"), D("0.001")]]

    # No bids on BTC-USDT: a market sell finds nothing.
    sell = system.ok(
        "POST",
        execute_url,
        buyer,
        {"pair": "BTC-USDT", "side": "sell", "type": "market", "amount": "0.001"},
        status=202,
    )
    failed = system.settled(
        f"{orders_url}/{sell['order_id']}", buyer, {"filled", "cancelled", "failed"}
    )
    assert (failed["status"], failed["reason"]) == ("failed", "no_liquidity"), failed
    until("sell unlocked", lambda: system.balance(buyer, "BTC", "locked") == 0)
    assert_error(system.call("GET", f"{system.trading}/api/trading/orderbook/NOPE-GBP", None), 404)


def test_pages_with_a_token_show_the_apis_figures(system: System) -> None:
    lee = system.new_user("lee")
    system.deposit_bank(lee, "GBP", "12.34")
    system.deposit_crypto(lee, "0.00123")
    cookies = {"access_token": make_token(DEV_JWT_SECRET, lee)}
    balances = system.ok("GET", f"{system.wallet}/api/wallets/balances/{lee}", lee)["balances"]
    with httpx.Client(timeout=20.0, cookies=cookies) as browser:
        page = browser.get(f"{system.wallet}/wallet")
        assert page.status_code == 200, page.text
        for row in balances:
            assert row["available_balance"] in page.text, (row, page.text[:2000])
        allocations = browser.get(f"{system.wallet}/allocations")
        for other in ("/portfolio", "/savings", "/transactions"):
            shown = browser.get(f"{system.wallet}{other}")
            assert shown.status_code == 200, (other, shown.text)
            assert "failed to load balances" not in shown.text.lower(), other
            assert "sign in" not in shown.text.lower(), other
    assert allocations.status_code == 200, allocations.text
    portfolio = system.ok("GET", f"{system.wallet}/api/wallets/portfolio/{lee}?currency=GBP", lee)
    html = allocations.text
    assert "<canvas" in html or "<svg" in html
    assert "aria-label" in html
    assert "<table" in html
    for row in portfolio["allocation"]:
        assert row["label"] in html
        assert row["percentage"] in html, (row, html[:3000])


def test_more_refusals_and_ownership(system: System) -> None:
    mo, nat = system.new_user("mo"), system.new_user("nat")
    system.deposit_crypto(mo, "0.003")
    system.fund_liquidity("ETH", "0.5")
    quote_url = f"{system.trading}/api/swap/quote"
    same = {"from_currency": "BTC", "to_currency": "BTC", "from_amount": "0.001"}
    assert_error(system.call("POST", quote_url, mo, same), set(range(400, 500)))
    quote = system.ok(
        "POST",
        quote_url,
        mo,
        {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.001"},
    )
    places = Decimal(quote["rate"]).as_tuple().exponent
    assert isinstance(places, int)
    assert -places <= 18, quote["rate"]
    started = system.ok(
        "POST", f"{system.trading}/api/swap/execute", mo, {"quote_id": quote["quote_id"]}, 202
    )
    swap_url = f"{system.trading}/api/swap/{started['swap_id']}"
    assert_error(system.call("GET", swap_url, nat), {403, 404})
    done = system.settled(swap_url, mo, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert within_scale(done["from_amount"], "BTC")
    assert within_scale(done["to_amount"], "ETH")
    assert_error(
        system.call("POST", f"{system.trading}/api/swap/execute", mo, {"quote_id": "nope"}), 404
    )
    assert_error(system.call("GET", f"{system.trading}/api/trading/orders/nope", mo), 404)
    assert_error(system.call("GET", f"{system.trading}/api/swap/nope", mo), 404)

    # Portfolios: own or an admin's reading; someone else's 403.
    portfolio_url = f"{system.wallet}/api/wallets/portfolio/{mo}?currency=GBP"
    assert_error(system.call("GET", portfolio_url, nat), 403)
    body = system.ok("GET", portfolio_url, system.admin)
    for asset in body["assets"]:
        if asset["value"] is not None:
            assert within_scale(asset["value"], "GBP"), asset
        assert within_scale(asset["holding"], asset["currency"]), asset
        assert len(asset["percentage"].split(".")[1]) == 2, asset
    assert within_scale(body["total_value"], "GBP"), body
    bad_at = system.http.get(
        f"{system.wallet}/api/wallets/balances/{mo}",
        params={"at": "yesterday-ish"},
        headers=system.headers(mo),
    )
    assert_error(bad_at, set(range(400, 500)))

    accrue_url = f"{system.trading}/api/admin/savings/accrue"
    assert_error(
        system.call("POST", accrue_url, system.admin, {"date": "2999-01-01"}), set(range(400, 500))
    )
    assert_error(
        system.call("POST", accrue_url, system.admin, {"date": "not-a-date"}), set(range(400, 500))
    )
    bad_price = {"currency": "BTC", "price": "-5"}
    assert_error(
        system.call("PUT", f"{system.trading}/api/admin/prices", system.admin, bad_price),
        set(range(400, 500)),
    )
    assert system.prices()["BTC"] == D(PINNED["BTC"])


def test_p2p_roles_each_action_belongs_to_one_party(system: System) -> None:
    seller, buyer = system.new_user("rseller"), system.new_user("rbuyer")
    system.deposit_crypto(seller, "0.01")
    base = f"{system.p2p}/api/p2p/enhanced"
    offer = system.ok(
        "POST",
        f"{base}/offers",
        seller,
        {
            "currency": "BTC",
            "fiat_currency": "GBP",
            "price": "50000.00",
            "min_amount": "0.002",
            "max_amount": "0.005",
            "payment_methods": ["bank_transfer"],
            "payment_window_minutes": 15,
        },
        status=201,
    )
    for amount in ("0.001", "0.000000001"):  # below min_amount; beyond BTC's scale
        refused = system.call(
            "POST", f"{base}/create-trade", buyer, {"offer_id": offer["offer_id"], "amount": amount}
        )
        assert_error(refused, set(range(400, 500)))
    trade = system.ok(
        "POST",
        f"{base}/create-trade",
        buyer,
        {"offer_id": offer["offer_id"], "amount": "0.002"},
        status=202,
    )
    url = f"{base}/trades/{trade['trade_id']}"
    system.settled(url, buyer, {"escrowed"})
    body = {"trade_id": trade["trade_id"]}
    assert_error(system.call("POST", f"{base}/dispute", buyer, body), 409)  # not paid yet
    assert_error(system.call("POST", f"{base}/mark-paid", seller, body), 403)
    system.ok("POST", f"{base}/mark-paid", buyer, body)
    assert_error(system.call("POST", f"{base}/release-crypto", buyer, body), 403)
    system.ok("POST", f"{base}/dispute", buyer, body)
    assert system.ok("GET", url, system.admin)["status"] == "disputed"
    resolved = system.call(
        "POST", f"{base}/resolve-dispute", system.admin, {**body, "outcome": "seller"}
    )
    assert resolved.status_code in {200, 202}, resolved.text
    system.settled(url, seller, {"cancelled"})
    assert system.balance(seller, "BTC", "locked") == 0
    assert system.balance(seller, "BTC") == D("0.01")
    assert system.balance(buyer, "BTC") == 0


def test_malformed_bodies_get_the_error_body(system: System) -> None:
    user = system.new_user("sloppy")
    routes = [
        f"{system.trading}/api/swap/quote",
        f"{system.trading}/api/swap/execute",
        f"{system.trading}/api/express-buy/quote",
        f"{system.trading}/api/express-buy/execute",
        f"{system.trading}/api/trading/execute",
        f"{system.trading}/api/savings/transfer",
        f"{system.trading}/api/referrals/bind",
        f"{system.p2p}/api/p2p/enhanced/offers",
        f"{system.p2p}/api/p2p/enhanced/create-trade",
        f"{system.p2p}/api/p2p/enhanced/mark-paid",
    ]
    for url in routes:
        assert_error(system.call("POST", url, user, {}), set(range(400, 500)))
        broken = system.http.post(
            url,
            content=b"{not json",
            headers={**system.headers(user), "Content-Type": "application/json"},
        )
        assert_error(broken, set(range(400, 500)))
    not_fiat = {"fiat_currency": "ETH", "fiat_amount": "10.00", "crypto_currency": "BTC"}
    assert_error(
        system.call("POST", f"{system.trading}/api/express-buy/quote", user, not_fiat),
        set(range(400, 500)),
    )


def test_referral_commission_on_p2p_and_spot_fees(system: System) -> None:
    referrer, invitee, other = (system.new_user(r) for r in ("ref2", "inv2", "other2"))
    system.ok("POST", f"{system.trading}/api/referrals/bind", invitee, {"referrer_id": referrer})
    system.deposit_crypto(invitee, "0.01")
    base = f"{system.p2p}/api/p2p/enhanced"
    offer = system.ok(
        "POST",
        f"{base}/offers",
        invitee,
        {
            "currency": "BTC",
            "fiat_currency": "GBP",
            "price": "50000.00",
            "min_amount": "0.001",
            "max_amount": "0.005",
            "payment_methods": ["bank_transfer"],
            "payment_window_minutes": 15,
        },
        status=201,
    )
    trade = system.ok(
        "POST",
        f"{base}/create-trade",
        other,
        {"offer_id": offer["offer_id"], "amount": "0.0010005"},
        status=202,
    )
    url = f"{base}/trades/{trade['trade_id']}"
    system.settled(url, other, {"escrowed"})
    system.ok("POST", f"{base}/mark-paid", other, {"trade_id": trade["trade_id"]})
    system.call("POST", f"{base}/release-crypto", invitee, {"trade_id": trade["trade_id"]})
    system.settled(url, invitee, {"completed"})
    # The seller (the invitee) paid 0.00000101 BTC: 20 % of it, rounded down.
    p2p_commission = down(D("0.00000101") * D("0.20"), "BTC")
    until("P2P commission", lambda: system.balance(referrer, "BTC") == p2p_commission)

    # A spot fill where the invitee is the maker: the maker fee (GBP) earns a commission too.
    # 39800.00 sits between the module's resting bids (≤ 39500) and asks (≥ 40000) on BTC-GBP.
    system.deposit_bank(other, "GBP", "250.00")
    execute_url = f"{system.trading}/api/trading/execute"
    order = {"pair": "BTC-GBP", "type": "limit", "amount": "0.005", "price": "39800.00"}
    maker = system.ok("POST", execute_url, invitee, {**order, "side": "sell"}, status=202)
    system.settled(f"{system.trading}/api/trading/orders/{maker['order_id']}", invitee, {"open"})
    taker = system.ok("POST", execute_url, other, {**order, "side": "buy"}, status=202)
    system.settled(f"{system.trading}/api/trading/orders/{taker['order_id']}", other, {"filled"})
    # 0.005 × 39800 = 199.00 GBP to the maker; fee 0.199 → 0.20 up; commission 0.04.
    until("spot commission", lambda: system.balance(referrer, "GBP") == D("0.04"))
    time.sleep(1.0)
    assert system.balance(referrer, "BTC") == p2p_commission  # exactly once each
    summary = until(
        "both commissions in the summary",
        lambda: (
            len(
                (b := system.ok("GET", f"{system.trading}/api/referrals/summary", referrer))[
                    "earned"
                ]
            )
            == 2
            and b
        ),
        10.0,
    )
    earned = {e["currency"]: e["amount"] for e in summary["earned"]}
    assert {c: D(a) for c, a in earned.items()} == {"BTC": p2p_commission, "GBP": D("0.04")}
    for currency, amount in earned.items():
        assert within_scale(amount, currency), earned


def test_an_open_page_hears_of_a_balance_change_within_2_s(system: System) -> None:
    """The pages' script listens on the wallet's `/events` stream (server-sent events)."""
    mia = system.new_user("mia")
    cookies = {"access_token": make_token(DEV_JWT_SECRET, mia)}
    with httpx.Client(timeout=httpx.Timeout(5.0), cookies=cookies) as browser:
        page = browser.get(f"{system.wallet}/wallet")
        script = browser.get(f"{system.wallet}/static/app.js")
        assert "/static/app.js" in page.text
        assert 'EventSource("/events")' in script.text
        with browser.stream("GET", f"{system.wallet}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            until_ready = [next(lines) for _ in range(3)]
            assert "event: ready" in until_ready, until_ready
            system.deposit_bank(mia, "GBP", "3.00")
            changed = time.monotonic()
            heard = False
            for line in lines:
                if line == "event: wallet-changed":
                    heard = True
                    break
                assert time.monotonic() - changed < 2.0, "no wallet-changed within 2 s"
            # A stream that ends without the event must fail too, not pass at once.
            assert heard, "the stream ended without wallet-changed"
            assert time.monotonic() - changed <= 2.0


def test_zz_a_fresh_command_is_answered_applied(system: System) -> None:
    """Contract: `duplicate` answers a SECOND command with the same key; the first is `applied`.

    Under load the embedded MongoDB refuses some wallet commits yet keeps their writes
    (test_mongo_stand_in_transactions.py); the wallet recognises its own outcome on the retry and
    answers it as decided (a lost commit answer on a real server looks the same)."""
    assert len(system.fresh_command_statuses) >= 5, system.fresh_command_statuses
    not_applied = [
        (r, status) for r, status in system.fresh_command_statuses if status != "applied"
    ]
    assert not_applied == []


def test_zz_an_express_buy_quote_is_firm_for_30_seconds_only(system: System) -> None:
    quote = system.early_express_quote
    time.sleep(max(0.0, 30.5 - (time.monotonic() - quote["made"])))
    response = system.call(
        "POST",
        f"{system.trading}/api/express-buy/execute",
        quote["user"],
        {"quote_id": quote["quote_id"]},
    )
    assert_error(response, 409, "quote_expired")


def test_zz_an_unpaid_trade_is_cancelled_within_10_s_after_its_deadline(system: System) -> None:
    trade = system.deadline_trade
    seller, buyer = trade["seller_id"], trade["buyer_id"]
    url = f"{system.p2p}/api/p2p/enhanced/trades/{trade['trade_id']}"
    deadline = datetime.fromisoformat(trade["payment_deadline"])
    assert deadline.tzinfo is not None, trade
    escrowed = system.ok("GET", url, seller)
    assert escrowed["status"] in {"escrowed", "cancelling", "cancelled"}, escrowed
    wait = (deadline - datetime.now(UTC)).total_seconds() + 10.5
    assert 0 < wait < 80, trade
    done = system.settled(url, buyer, {"cancelled", "completed", "failed"}, within=wait)
    assert done["status"] == "cancelled", done
    assert system.balance(seller, "BTC", "locked") == 0
    assert system.balance(seller, "BTC") == D("0.002")


def test_zzz_admin_price_routes_answer_404_in_production(
    system: System, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second trading service with IS_STAGING=false (its own database and consumer group; run
    last, since its feed publishes unpinned prices to the shared topic)."""
    secret = "acceptance-production-jwt-secret-0123456789abcdef"
    port = free_port()
    env = {
        **os.environ,
        "IS_STAGING": "false",
        "AUTH_JWT_SECRET": secret,
        "NOWPAYMENTS_IPN_SECRET": "acceptance-production-ipn-secret-0123456789",
        "NOWPAYMENTS_API_KEY": "acceptance-production-api-key-0123456789",
        "KAFKA_BOOTSTRAP_SERVERS": system.kafka,
        "MONGODB_URL": system.mongodb_url,
        "TRADING_HTTP_PORT": str(port),
        "TRADING_MONGODB_DATABASE": "trading_production_check",
        "TRADING_RESULTS_CONSUMER_GROUP": "trading-production-check",
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("production") / "trading.out"
    with log.open("wb") as sink:
        service = subprocess.Popen(
            [sys.executable, "-m", "trading"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert service.poll() is None, log.read_text()
            try:
                return system.http.get(f"{base}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        until("production trading ready", healthy, 60.0)
        admin = {"Authorization": f"Bearer {make_token(secret, 'prod-admin', ['admin'])}"}
        pin = system.http.put(
            f"{base}/api/admin/prices", json={"currency": "BTC", "price": "1.00"}, headers=admin
        )
        assert_error(pin, 404)
        assert_error(system.http.delete(f"{base}/api/admin/prices/BTC", headers=admin), 404)
        # Its built-in walk (PRICE_SOURCE unset) is public: production says so at start.
        assert '"prices.builtin_feed_in_production"' in log.read_text(), log.read_text()
    finally:
        service.kill()
        service.wait(10)
