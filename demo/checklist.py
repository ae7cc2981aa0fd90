"""The seed's phase-4 checklist, walked through the public API of a running system as fresh users.

Every check prints ✓ or ✗ with the figures it compared. The demo is a client like any other: it
uses only the contract's HTTP routes, plus the Kafka command a bank integration would send to bring
GBP in (fiat has no HTTP route of its own).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from shared.http import make_token
from shared.messaging.topics import Topics
from shared.money import format_amount, get_currency
from shared.wallet_client import WalletClient

# A valid mainnet bech32 address (withdrawals check checksums before locking anything).
BTC_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
METADATA_SHOWN = ("referred_user_id", "source_transaction_type", "fee", "rate")
DEV_JWT_SECRET = "dev-only-jwt-secret-not-for-production"  # noqa: S105 - make run's default


def _url(port_env: str, default: int) -> str:
    return f"http://127.0.0.1:{os.environ.get(port_env) or default}"


@dataclass
class Endpoints:
    wallet: str = field(default_factory=lambda: _url("WALLET_HTTP_PORT", 8001))
    gateway: str = field(default_factory=lambda: _url("IPN_GATEWAY_HTTP_PORT", 8002))
    p2p: str = field(default_factory=lambda: _url("P2P_HTTP_PORT", 8003))
    trading: str = field(default_factory=lambda: _url("TRADING_HTTP_PORT", 8004))
    simulator: str = field(default_factory=lambda: _url("NOWPAYMENTS_SIMULATOR_PORT", 8010))
    kafka: str = field(
        default_factory=lambda: os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    )
    topic_prefix: str = field(default_factory=lambda: os.environ.get("KAFKA_TOPIC_PREFIX", ""))
    jwt_secret: str = field(
        default_factory=lambda: os.environ.get("AUTH_JWT_SECRET") or DEV_JWT_SECRET
    )


class CheckFailed(Exception):
    """A step could not go on (an API answered an error); the run reports it as ✗."""


@dataclass
class Report:
    passed: int = 0
    failed: int = 0

    def check(self, ok: bool, what: str, figures: str) -> bool:
        mark = "✓" if ok else "✗"
        print(f"  {mark} {what}: {figures}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def D(value: Any) -> Decimal:
    return Decimal(str(value))


class Demo:
    def __init__(self, endpoints: Endpoints, http: httpx.AsyncClient, wallet: WalletClient) -> None:
        self.at = endpoints
        self.http = http
        self.wallet = wallet
        self.report = Report()
        self.run_id = uuid.uuid4().hex[:8]
        self.admin = self.user("admin")

    def user(self, role: str) -> str:
        return f"demo-{role}-{self.run_id}"

    def auth(self, user: str) -> dict[str, str]:
        roles = ["admin"] if user == self.admin else []
        return {"Authorization": f"Bearer {make_token(self.at.jwt_secret, user, roles)}"}

    async def call(
        self, method: str, url: str, user: str, body: Any = None, expect: int | None = None
    ) -> Any:
        response = await self.http.request(method, url, json=body, headers=self.auth(user))
        if response.status_code >= 400 or (expect is not None and response.status_code != expect):
            raise CheckFailed(f"{method} {url} answered {response.status_code}: {response.text}")
        return response.json()

    async def until(
        self, what: str, probe: Callable[[], Awaitable[Any]], within: float = 30.0
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            value = await probe()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise CheckFailed(f"{what}: not within {within:.0f}s")
            await asyncio.sleep(0.2)

    # -- reading --------------------------------------------------------------------------------

    async def balance(self, user: str, currency: str) -> tuple[Decimal, Decimal, Decimal]:
        body = await self.call("GET", f"{self.at.wallet}/api/wallets/balances/{user}", user)
        for row in body["balances"]:
            if row["currency"] == currency:
                return (
                    D(row["available_balance"]),
                    D(row["locked_balance"]),
                    D(row["savings_balance"]),
                )
        return Decimal(0), Decimal(0), Decimal(0)

    async def platform(self, account: str, currency: str) -> Decimal:
        body = await self.call("GET", f"{self.at.wallet}/api/wallets/platform-balances", self.admin)
        for row in body["accounts"]:
            if row["account"] == account and row["currency"] == currency:
                return D(row["balance"])
        return Decimal(0)

    async def available_becomes(self, user: str, currency: str, amount: Decimal) -> None:
        async def reached() -> bool:
            return (await self.balance(user, currency))[0] == amount

        await self.until(f"{user} {currency} available {amount}", reached)

    async def status_of(self, url: str, user: str, final: set[str]) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            body: dict[str, Any] = await self.call("GET", url, user)
            return body if body["status"] in final else None

        result: dict[str, Any] = await self.until(f"{url} to finish", done)
        return result

    # -- funding ----------------------------------------------------------------------------------

    async def deposit_crypto(self, user: str, amount: str) -> str:
        """A BTC deposit through the gateway and the NOWPayments simulator; returns the payment id."""
        created = await self.call(
            "POST",
            f"{self.at.gateway}/api/nowpayments/create-deposit",
            user,
            {"currency": "btc", "amount": "100", "price_currency": "usd"},
        )
        payment_id = str(created["payment_id"])
        for status in ("waiting", "confirming", "finished"):
            fired = await self.http.post(
                f"{self.at.simulator}/simulator/payments/{payment_id}/ipn",
                json={"status": status, "actually_paid": amount, "outcome_amount": amount},
            )
            if fired.status_code != 200 or fired.json().get("status_code") != 200:
                raise CheckFailed(f"IPN {status} for {payment_id}: {fired.text}")
        return payment_id

    async def deposit_gbp(self, user: str, amount: str) -> None:
        """GBP from the bank, as the bank integration sends it (a deposit_bank_transfer credit)."""
        result = await self.wallet.credit(
            user_id=user,
            currency="GBP",
            amount=amount,
            transaction_type="deposit_bank_transfer",
            reference_id=f"bank-{uuid.uuid4().hex}",
            metadata={"source": "demo"},
        )
        if result is None or result.status != "applied":
            raise CheckFailed(f"bank transfer of {amount} GBP to {user}: {result}")

    async def fund_liquidity(self, currency: str, amount: str) -> None:
        before = await self.platform("platform:liquidity", currency)
        await self.call(
            "POST",
            f"{self.at.trading}/api/admin/liquidity",
            self.admin,
            {"currency": currency, "amount": amount, "reference_id": f"demo-{uuid.uuid4().hex}"},
        )

        async def funded() -> bool:
            return await self.platform("platform:liquidity", currency) == before + D(amount)

        await self.until(f"platform:liquidity {currency} funded", funded)

    # -- the checklist ------------------------------------------------------------------------------

    async def deposit_flow(self, alice: str) -> None:
        print("1. Deposit flow", flush=True)
        payment_id = await self.deposit_crypto(alice, "0.0215")
        await self.available_becomes(alice, "BTC", D("0.0215"))
        self.report.check(True, "deposit credited", f"{alice} BTC available 0 → 0.0215")
        again = await self.http.post(
            f"{self.at.simulator}/simulator/payments/{payment_id}/ipn",
            json={"status": "finished", "actually_paid": "0.0215", "outcome_amount": "0.0215"},
        )
        answer = again.json().get("response", {})
        await asyncio.sleep(1.0)
        available = (await self.balance(alice, "BTC"))[0]
        self.report.check(
            available == D("0.0215") and answer.get("status") == "duplicate",
            "a resent IPN credits nothing",
            f"answer {answer.get('status')!r}, available still {format_amount(available)}",
        )
        history = await self.call(
            "GET",
            f"{self.at.wallet}/api/wallets/transactions/{alice}?currency=BTC",
            alice,
        )
        rows = [r for r in history["items"] if r["transaction_type"] == "deposit_nowpayments"]
        self.report.check(
            len(rows) == 1 and D(rows[0]["amount"]) == D("0.0215"),
            "wallet_transactions logged the deposit",
            f"{len(rows)} row, amount {rows[0]['amount'] if rows else '-'},"
            f" balance_after {rows[0]['balance_after'] if rows else '-'}",
        )

    async def withdrawal_flow(self, alice: str) -> None:
        print("2. Withdrawal flow", flush=True)
        fees_before = await self.platform("platform:fees", "BTC")
        available_before, _, _ = await self.balance(alice, "BTC")
        requested = await self.call(
            "POST",
            f"{self.at.gateway}/api/withdrawals/request",
            alice,
            {"currency": "BTC", "amount": "0.002", "address": BTC_ADDRESS},
        )
        withdrawal_id, fee = requested["withdrawal_id"], D(requested["fee"])
        held = D("0.002") + fee

        async def locked() -> bool:
            return (await self.balance(alice, "BTC"))[1] == held

        await self.until("withdrawal lock", locked)
        self.report.check(
            True,
            "balance locked",
            f"locked {format_amount(held)} = 0.002 + fee {format_amount(fee)}",
        )

        async def shown_locked() -> bool:
            # What an admin acts on: the gateway's status, which follows the wallet's result a
            # moment after the balance itself shows the lock.
            listed = await self.call("GET", f"{self.at.gateway}/api/withdrawals", alice)
            return any(
                w["withdrawal_id"] == withdrawal_id and w["status"] == "locked"
                for w in listed["items"]
            )

        await self.until("withdrawal shown locked", shown_locked)
        await self.call(
            "POST",
            f"{self.at.gateway}/api/withdrawals/approve",
            self.admin,
            {"withdrawal_id": withdrawal_id},
        )

        async def released() -> bool:
            available, locked_now, _ = await self.balance(alice, "BTC")
            return locked_now == 0 and available == available_before - held

        await self.until("withdrawal release", released)
        collected = await self.platform("platform:fees", "BTC") - fees_before
        self.report.check(
            collected == fee,
            "admin approval released it, fee to platform:fees",
            f"available {format_amount(available_before)} → "
            f"{format_amount(available_before - held)}, platform:fees +{format_amount(collected)}",
        )

    async def p2p_flow(self, alice: str, bob: str) -> None:
        print("3. P2P trade", flush=True)
        fees_before = await self.platform("platform:fees", "BTC")
        alice_before = await self.balance(alice, "BTC")
        offer = await self.call(
            "POST",
            f"{self.at.p2p}/api/p2p/enhanced/offers",
            alice,
            {
                "currency": "BTC",
                "fiat_currency": "GBP",
                "price": "52000.00",
                "min_amount": "0.001",
                "max_amount": "0.01",
                "payment_methods": ["bank_transfer"],
                "payment_window_minutes": 15,
            },
        )
        trade = await self.call(
            "POST",
            f"{self.at.p2p}/api/p2p/enhanced/create-trade",
            bob,
            {"offer_id": offer["offer_id"], "amount": "0.005"},
        )
        trade_url = f"{self.at.p2p}/api/p2p/enhanced/trades/{trade['trade_id']}"
        fee = D(trade["fee"])
        escrowed = await self.status_of(trade_url, bob, {"escrowed", "failed"})
        alice_locked = (await self.balance(alice, "BTC"))[1]
        self.report.check(
            escrowed["status"] == "escrowed" and alice_locked == alice_before[1] + D("0.005") + fee,
            "seller's coins locked",
            f"status {escrowed['status']}, locked {format_amount(alice_locked)} = 0.005 + fee"
            f" {format_amount(fee)}; fiat {trade['fiat_amount']} GBP",
        )
        body = {"trade_id": trade["trade_id"]}
        paid = await self.call("POST", f"{self.at.p2p}/api/p2p/enhanced/mark-paid", bob, body)
        self.report.check(paid["status"] == "paid", "buyer marked paid", f"status {paid['status']}")
        await self.call("POST", f"{self.at.p2p}/api/p2p/enhanced/release-crypto", alice, body)
        done = await self.status_of(trade_url, alice, {"completed", "failed"})
        bob_available = (await self.balance(bob, "BTC"))[0]
        alice_after = await self.balance(alice, "BTC")
        fees_after = await self.platform("platform:fees", "BTC")
        self.report.check(
            done["status"] == "completed" and bob_available == D("0.005"),
            "buyer credited exactly the amount",
            f"status {done['status']}, {bob} BTC available {format_amount(bob_available)}",
        )
        self.report.check(
            alice_after[0] == alice_before[0] - D("0.005") - fee
            and alice_after[1] == alice_before[1],
            "seller's balance released",
            f"available {format_amount(alice_before[0])} → {format_amount(alice_after[0])}",
        )
        self.report.check(
            fees_after - fees_before == fee,
            "fee collected in the admin wallet",
            f"platform:fees BTC +{format_amount(fees_after - fees_before)} (trade fee {format_amount(fee)})",
        )

    async def swap_flow(self, alice: str) -> None:
        print("4. Swap", flush=True)
        await self.fund_liquidity("ETH", "50")
        btc_before, eth_before = (
            (await self.balance(alice, "BTC"))[0],
            (await self.balance(alice, "ETH"))[0],
        )
        quote = await self.call(
            "POST",
            f"{self.at.trading}/api/swap/quote",
            alice,
            {"from_currency": "BTC", "to_currency": "ETH", "from_amount": "0.01"},
        )
        eth = get_currency("ETH")
        expected_to = ((D("0.01") - D(quote["fee"])) * D(quote["rate"])).quantize(
            eth.quantum, rounding=ROUND_DOWN
        )
        self.report.check(
            D(quote["to_amount"]) == expected_to,
            "amounts match the quoted rate",
            f"(0.01 - fee {quote['fee']}) × rate {quote['rate']} = {quote['to_amount']} ETH",
        )
        swap = await self.call(
            "POST", f"{self.at.trading}/api/swap/execute", alice, {"quote_id": quote["quote_id"]}
        )
        done = await self.status_of(
            f"{self.at.trading}/api/swap/{swap['swap_id']}", alice, {"completed", "failed"}
        )
        btc_after, eth_after = (
            (await self.balance(alice, "BTC"))[0],
            (await self.balance(alice, "ETH"))[0],
        )
        self.report.check(
            done["status"] == "completed"
            and btc_before - btc_after == D("0.01")
            and eth_after - eth_before == expected_to,
            "BTC debited, ETH credited",
            f"status {done['status']}, BTC -{format_amount(btc_before - btc_after)},"
            f" ETH +{format_amount(eth_after - eth_before)}",
        )

    async def express_buy_flow(self, carol: str, heading: str = "5. Express buy") -> Decimal:
        print(heading, flush=True)
        await self.deposit_gbp(carol, "500.00")
        await self.fund_liquidity("BTC", "1")
        liquidity_gbp = await self.platform("platform:liquidity", "GBP")
        liquidity_btc = await self.platform("platform:liquidity", "BTC")
        quote = await self.call(
            "POST",
            f"{self.at.trading}/api/express-buy/quote",
            carol,
            {"fiat_currency": "GBP", "fiat_amount": "100.00", "crypto_currency": "BTC"},
        )
        order = await self.call(
            "POST",
            f"{self.at.trading}/api/express-buy/execute",
            carol,
            {"quote_id": quote["quote_id"]},
        )
        done = await self.status_of(
            f"{self.at.trading}/api/express-buy/{order['order_id']}", carol, {"completed", "failed"}
        )
        gbp, btc = (await self.balance(carol, "GBP"))[0], (await self.balance(carol, "BTC"))[0]
        fee = D(quote["fee"])
        self.report.check(
            done["status"] == "completed" and gbp == D("400") and btc == D(quote["crypto_amount"]),
            "GBP debited, BTC credited",
            f"status {done['status']}, GBP 500 → {format_amount(gbp)}, BTC +{format_amount(btc)}",
        )
        gbp_delta = await self.platform("platform:liquidity", "GBP") - liquidity_gbp
        btc_delta = liquidity_btc - await self.platform("platform:liquidity", "BTC")
        self.report.check(
            gbp_delta == D("100") - fee and btc_delta == btc,
            "admin liquidity updated",
            f"platform:liquidity GBP +{format_amount(gbp_delta)} (100 - fee {format_amount(fee)}),"
            f" BTC -{format_amount(btc_delta)}",
        )
        return fee

    async def referral_flow(self, referrer: str, invitee: str) -> None:
        print("6. Referral commission", flush=True)
        await self.call(
            "POST", f"{self.at.trading}/api/referrals/bind", invitee, {"referrer_id": referrer}
        )
        fee = await self.express_buy_flow(invitee, heading="   the invitee's express buy:")
        commission = (fee * D("0.20")).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
        await self.available_becomes(referrer, "GBP", commission)
        history = await self.call(
            "GET", f"{self.at.wallet}/api/wallets/transactions/{referrer}?currency=GBP", referrer
        )
        rows = [r for r in history["items"] if r["transaction_type"] == "referral_commission"]
        metadata = rows[0]["metadata"] if rows else {}
        self.report.check(
            len(rows) == 1 and D(rows[0]["amount"]) == commission,
            "referrer credited the commission once",
            f"{referrer} GBP +{format_amount(commission)} = 20% of fee {format_amount(fee)}",
        )
        self.report.check(
            metadata.get("referred_user_id") == invitee
            and bool(metadata.get("source_transaction_id"))
            and metadata.get("source_transaction_type") == "express_buy",
            "commission logged with its metadata",
            ", ".join(
                f"{k}={metadata.get(k)}"
                for k in ("referred_user_id", "source_transaction_type", "fee", "rate")
            ),
        )

    async def portfolio_flow(self, alice: str) -> None:
        print("7. Portfolio calculations", flush=True)
        body = await self.call(
            "GET", f"{self.at.wallet}/api/wallets/portfolio/{alice}?currency=GBP", alice
        )
        priced = [a for a in body["assets"] if a["price"] is not None]
        exact = sum((D(a["holding"]) * D(a["price"]) for a in priced), Decimal(0))
        shown = exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        self.report.check(
            D(body["total_value"]) == shown,
            "total value = Σ balance × price",
            " + ".join(f"{a['holding']} {a['currency']} × {a['price']}" for a in priced)
            + f" = {format_amount(shown)} {body['valuation_currency']}",
        )
        percentages = sum(
            (D(a["percentage"]) for a in body["assets"] if a["percentage"] is not None), Decimal(0)
        )
        allocation = sum((D(a["percentage"]) for a in body["allocation"]), Decimal(0))
        self.report.check(
            percentages == D("100.00") and allocation == D("100.00"),
            "percentages sum to 100%",
            f"assets {percentages}, allocation {allocation}",
        )
        labels = [a["label"] for a in body["allocation"]]
        top = [a["currency"] for a in sorted(priced, key=lambda a: D(a["value"]), reverse=True)]
        expected = top[:5] + (["Others"] if len(top) > 5 else [])
        self.report.check(
            labels == expected,
            "top coins + Others",
            f"allocation {labels}",
        )

    async def run(self) -> int:
        alice, bob, carol = self.user("alice"), self.user("bob"), self.user("carol")
        referrer, invitee = self.user("referrer"), self.user("invitee")
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("deposit", lambda: self.deposit_flow(alice)),
            ("withdrawal", lambda: self.withdrawal_flow(alice)),
            ("p2p", lambda: self.p2p_flow(alice, bob)),
            ("swap", lambda: self.swap_flow(alice)),
            ("express buy", lambda: self._express(carol)),
            ("referral", lambda: self.referral_flow(referrer, invitee)),
            ("portfolio", lambda: self.portfolio_flow(alice)),
        ]
        print(f"Phase-4 checklist, run {self.run_id}", flush=True)
        for name, step in steps:
            try:
                await step()
            except (CheckFailed, httpx.HTTPError, KeyError, TypeError) as error:
                self.report.check(False, f"{name} could not finish", str(error)[:300])
        total = self.report.passed + self.report.failed
        print(f"{self.report.passed} passed, {self.report.failed} failed", flush=True)
        return 0 if self.report.failed == 0 and total > 0 else 1

    async def _express(self, carol: str) -> None:
        await self.express_buy_flow(carol)


async def main() -> int:
    endpoints = Endpoints()
    async with (
        httpx.AsyncClient(timeout=15.0) as http,
        WalletClient(
            endpoints.kafka, topics=Topics(endpoints.topic_prefix), timeout=30.0
        ) as wallet,
    ):
        return await Demo(endpoints, http, wallet).run()
