"""Savings and referral commissions against the REAL wallet service over the embedded Kafka and
MongoDB: transfers follow the wallet's results, an accrual run twice pays once, and a swap by an
invitee pays the referrer once even when wallet.events is read again from the start."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo.asynchronous.database import AsyncDatabase

from shared.http import make_token
from shared.infra.net import free_port
from shared.messaging.topics import Topics
from shared.testing.services import real_wallet, until_healthy
from shared.wallet_client import WalletClient
from trading.bootstrap import TradingService, build_service, create_trading_app
from trading.referrals.entrypoints import build_referrals_feature
from trading.referrals.settings import ReferralSettings
from trading.savings.entrypoints import build_savings_feature
from trading.savings.settings import SavingsSettings
from trading.settings import TradingSettings

JWT_SECRET = "trading-wallet-e2e-jwt-secret-of-at-least-32-bytes"


@dataclass
class ShiftedClock:
    """The real time, moved forward when a test needs "tomorrow" (the wallet keeps real time)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class System:
    trading: str
    wallet_url: str
    http: httpx.AsyncClient
    wallet: WalletClient
    clock: ShiftedClock
    until: Callable[..., Awaitable[None]]
    start_trading: Callable[..., AbstractAsyncContextManager[tuple[str, TradingService]]]
    database: AsyncDatabase[dict[str, Any]]
    bootstrap_servers: str
    topics: Topics

    def auth(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}

    async def deposit(self, user: str, currency: str, amount: str) -> None:
        result = await self.wallet.credit(
            user_id=user,
            currency=currency,
            amount=amount,
            transaction_type="deposit_nowpayments",
            reference_id=f"deposit-{uuid.uuid4().hex}",
        )
        assert result is not None
        assert result.status == "applied", result

    async def balances(self, user: str, currency: str) -> dict[str, Decimal]:
        response = await self.http.get(
            f"{self.wallet_url}/api/wallets/balances/{user}", headers=self.auth(user)
        )
        assert response.status_code == 200, response.text
        for row in response.json()["balances"]:
            if row["currency"] == currency:
                return {k: Decimal(v) for k, v in row.items() if k.endswith("_balance")}
        return {}

    async def transactions(self, user: str, transaction_type: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"{self.wallet_url}/api/wallets/transactions/{user}",
            params={"limit": 200},
            headers=self.auth(user),
        )
        assert response.status_code == 200, response.text
        return [t for t in response.json()["items"] if t["transaction_type"] == transaction_type]

    async def transfer(
        self, user: str, currency: str, amount: str, direction: str
    ) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.trading}/api/savings/transfer",
            json={"currency": currency, "amount": amount, "direction": direction},
            headers=self.auth(user),
        )
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"
        transfer_id = response.json()["transfer_id"]
        settled: dict[str, Any] = {}

        async def finished() -> bool:
            got = await self.http.get(
                f"{self.trading}/api/savings/transfers/{transfer_id}", headers=self.auth(user)
            )
            settled.update(got.json())
            return bool(got.json()["status"] != "pending")

        await self.until(finished, within=30)
        return settled

    async def positions(self, user: str) -> dict[str, tuple[str, str]]:
        response = await self.http.get(
            f"{self.trading}/api/savings/positions", headers=self.auth(user)
        )
        assert response.status_code == 200, response.text
        return {
            p["currency"]: (p["savings_balance"], p["interest_earned"])
            for p in response.json()["items"]
        }

    async def accrue(self, day: str) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.trading}/api/admin/savings/accrue",
            json={"date": day},
            headers=self.auth("ops", "admin"),
        )
        assert response.status_code == 200, response.text
        return {item["currency"]: item for item in response.json()["items"]}

    async def summary(self, user: str) -> dict[str, Any]:
        response = await self.http.get(
            f"{self.trading}/api/referrals/summary", headers=self.auth(user)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def platform_balance(self, account: str, currency: str) -> Decimal:
        response = await self.http.get(
            f"{self.wallet_url}/api/wallets/platform-balances", headers=self.auth("ops", "admin")
        )
        assert response.status_code == 200, response.text
        for row in response.json()["accounts"]:
            if (row["account"], row["currency"]) == (account, currency):
                return Decimal(row["balance"])
        return Decimal(0)

    async def earned(self, user: str) -> list[dict[str, str]]:
        return list((await self.summary(user))["earned"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(
    kafka_bootstrap_servers: str,
    kafka_topics: Topics,
    mongodb_url: str,
    mongo_database: AsyncDatabase[dict[str, Any]],
    serve_app: Callable[[Any, int], AbstractAsyncContextManager[str]],
    until: Callable[..., Awaitable[None]],
) -> AsyncIterator[System]:
    clock = ShiftedClock()

    def trading_service(
        *, referral_group: str = "trading-referrals", savings: bool = True
    ) -> TradingService:
        port = free_port()
        settings = TradingSettings(
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_topic_prefix=kafka_topics.prefix,
            mongodb_url=mongodb_url,
            trading_mongodb_database=mongo_database.name,
            auth_jwt_secret=JWT_SECRET,
            TRADING_RESULTS_CONSUMER_GROUP=f"trading-e2e-{port}",
            TRADING_RESULTS_SESSION_TIMEOUT_MS=3000,
            TRADING_RESULTS_HEARTBEAT_INTERVAL_MS=500,
        )
        features = [
            partial(
                build_referrals_feature,
                settings=ReferralSettings(referral_events_consumer_group=referral_group),
            )
        ]
        if savings:
            features.append(
                partial(
                    build_savings_feature,
                    settings=SavingsSettings(
                        savings_apr={"USDT": "0.05", "ETH": "0.04"},
                        savings_scheduler_enabled=False,
                    ),
                )
            )
        return build_service(settings, features=features, clock=clock)

    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30.0))
        wallet_url = await stack.enter_async_context(
            real_wallet(
                kafka_bootstrap_servers, kafka_topics, mongodb_url, mongo_database, JWT_SECRET
            )
        )
        service = trading_service()
        trading_url = await stack.enter_async_context(
            serve_app(create_trading_app(service), free_port())
        )
        await until_healthy(http, trading_url)
        wallet = await stack.enter_async_context(
            WalletClient(kafka_bootstrap_servers, topics=kafka_topics, timeout=30)
        )

        @asynccontextmanager
        async def start_trading(**options: Any) -> AsyncIterator[tuple[str, TradingService]]:
            extra = trading_service(**options)
            async with serve_app(create_trading_app(extra), free_port()) as url:
                await until_healthy(http, url)
                yield url, extra

        yield System(
            trading_url,
            wallet_url,
            http,
            wallet,
            clock,
            until,
            start_trading,
            mongo_database,
            kafka_bootstrap_servers,
            kafka_topics,
        )


async def test_savings_transfers_follow_the_wallet(system: System) -> None:
    await system.deposit("sam", "USDT", "500")
    into = await system.transfer("sam", "USDT", "300", "to_savings")
    assert into["status"] == "completed", into
    assert (await system.positions("sam"))["USDT"] == ("300", "0")
    out = await system.transfer("sam", "USDT", "100.5", "to_wallet")
    assert out["status"] == "completed", out
    assert (await system.positions("sam"))["USDT"] == ("199.5", "0")
    wallet = await system.balances("sam", "USDT")
    assert (wallet["available_balance"], wallet["savings_balance"]) == (
        Decimal("300.5"),
        Decimal("199.5"),
    )

    too_much = await system.transfer("sam", "USDT", "1000", "to_wallet")
    assert (too_much["status"], too_much["reason"]) == ("failed", "insufficient_funds")
    assert (await system.positions("sam"))["USDT"] == ("199.5", "0")

    # Someone else's transfer is not found; bad requests move nothing.
    other = await system.http.get(
        f"{system.trading}/api/savings/transfers/{into['transfer_id']}", headers=system.auth("eve")
    )
    assert (other.status_code, other.json()["error"]["code"]) == (404, "transfer_not_found")
    for body, code in (
        ({"currency": "USDT", "amount": "1", "direction": "up"}, "invalid_direction"),
        ({"currency": "USDT", "amount": 1, "direction": "to_savings"}, "amount_not_a_string"),
        (
            {"currency": "USDT", "amount": "0.0000001", "direction": "to_savings"},
            "amount_too_precise",
        ),
        ({"currency": "BTC", "amount": "1", "direction": "to_savings"}, "no_savings_product"),
        ({"currency": "XYZ", "amount": "1", "direction": "to_savings"}, "unknown_currency"),
    ):
        refused = await system.http.post(
            f"{system.trading}/api/savings/transfer", json=body, headers=system.auth("sam")
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, code), body
    anonymous = await system.http.get(f"{system.trading}/api/savings/positions")
    assert anonymous.status_code == 401
    products = await system.http.get(
        f"{system.trading}/api/savings/products", headers=system.auth("sam")
    )
    assert products.json() == {
        "items": [{"currency": "ETH", "apr": "0.04"}, {"currency": "USDT", "apr": "0.05"}]
    }


async def test_an_accrual_run_twice_pays_once(system: System) -> None:
    await system.deposit("ada", "ETH", "10")
    assert (await system.transfer("ada", "ETH", "1.234567890123456789", "to_savings"))[
        "status"
    ] == "completed"
    today = system.clock().date().isoformat()

    first = await system.accrue(today)
    # 1.234567890123456789 × 0.04 / 365, floored at 18 decimals
    assert first["ETH"]["paid"] == 1
    assert first["ETH"]["paid_amount"] == "0.000135295111246406"
    assert (await system.positions("ada"))["ETH"] == (
        "1.234703185234703195",
        "0.000135295111246406",
    )
    after_first = await system.balances("ada", "ETH")
    # The wallet put the interest into ada's savings, out of platform:interest.
    assert after_first["savings_balance"] == Decimal("1.234703185234703195")
    assert after_first["available_balance"] == Decimal("10") - Decimal("1.234567890123456789")

    second = await system.accrue(today)
    assert (second["ETH"]["paid"], second["ETH"]["already_settled"]) == (0, 1)
    assert await system.balances("ada", "ETH") == after_first
    assert len(await system.transactions("ada", "savings_interest")) == 1

    # Tomorrow, the same day accrued again as an ended day (the scheduler's run): the first run
    # completed the day, so it stays as that run left it: ada's key is paid, and bo, who saved
    # after it, is paid nothing for that day.
    await system.deposit("bo", "ETH", "5")
    assert (await system.transfer("bo", "ETH", "3.65", "to_savings"))["status"] == "completed"
    system.clock.offset = timedelta(days=1)
    try:
        backfill = await system.accrue(today)
    finally:
        system.clock.offset = timedelta()
    assert (backfill["ETH"]["paid"], backfill["ETH"]["paid_amount"]) == (0, "0")
    assert (backfill["ETH"]["accounts_owed"], backfill["ETH"]["already_settled"]) == (1, 1)
    assert await system.balances("ada", "ETH") == after_first
    assert len(await system.transactions("ada", "savings_interest")) == 1
    assert await system.transactions("bo", "savings_interest") == []


async def test_accrual_refusals(system: System) -> None:
    url = f"{system.trading}/api/admin/savings/accrue"
    tomorrow = (system.clock().date() + timedelta(days=1)).isoformat()
    for body, status, code in (
        ({"date": tomorrow}, 400, "date_in_future"),
        ({"date": "2026-02-30"}, 400, "invalid_date"),
        ({"date": 20261129}, 400, "invalid_date"),
        ({}, 422, "validation_error"),
    ):
        refused = await system.http.post(url, json=body, headers=system.auth("ops", "admin"))
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), body
    not_admin = await system.http.post(url, json={"date": tomorrow}, headers=system.auth("sam"))
    assert not_admin.status_code == 403


async def test_a_swap_by_an_invitee_pays_the_referrer_once(system: System) -> None:
    bind = f"{system.trading}/api/referrals/bind"
    bound = await system.http.post(bind, json={"referrer_id": "rita"}, headers=system.auth("ivan"))
    assert bound.status_code == 200, bound.text
    again = await system.http.post(bind, json={"referrer_id": "rob"}, headers=system.auth("ivan"))
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_bound")
    itself = await system.http.post(bind, json={"referrer_id": "zoe"}, headers=system.auth("zoe"))
    assert (itself.status_code, itself.json()["error"]["code"]) == (400, "self_referral")

    funded = await system.wallet.credit(
        user_id="ops",
        currency="ETH",
        amount="100",
        transaction_type="liquidity_funding",
        reference_id="liquidity-eth-1",
    )
    assert funded is not None
    assert funded.status == "applied", funded
    await system.deposit("ivan", "BTC", "0.5")
    swap = await system.wallet.exchange(
        user_id="ivan",
        pay_currency="BTC",
        pay_amount="0.01",
        fee="0.00001",
        receive_currency="ETH",
        receive_amount="0.3",
        exchange_type="swap",
        reference_id="swap-ivan-1",
    )
    assert swap is not None
    assert swap.status == "applied", swap

    async def paid() -> bool:
        return await system.earned("rita") == [{"currency": "BTC", "amount": "0.000002"}]

    await system.until(paid, within=30)
    assert (await system.summary("rita"))["invitees"] == 1
    assert (await system.summary("ivan"))["referrer_id"] == "rita"
    [commission] = await system.transactions("rita", "referral_commission")
    assert Decimal(commission["amount"]) == Decimal("0.000002")
    assert commission["reference_id"] == f"referral:{swap.transaction_id}:BTC"
    assert commission["metadata"] == {
        "referred_user_id": "ivan",
        "source_transaction_id": swap.transaction_id,
        "source_transaction_type": "swap",
        "fee": "0.00001",
        "rate": "0.2",
    }

    # wallet.events read again from the start by a new consumer group: nothing is paid twice,
    # neither with the commission records (skipped) nor without them (the wallet's key).
    async with system.start_trading(referral_group="replay-1", savings=False):
        await _caught_up(system, "replay-1")
    await system.database["referral_commissions"].delete_many({})
    async with system.start_trading(referral_group="replay-2", savings=False):
        await _caught_up(system, "replay-2")

        async def settled_again() -> bool:
            return await system.earned("rita") == [{"currency": "BTC", "amount": "0.000002"}]

        await system.until(settled_again, within=30)
    assert len(await system.transactions("rita", "referral_commission")) == 1
    assert (await system.balances("rita", "BTC"))["available_balance"] == Decimal("0.000002")
    # Paid out of the fee, never minted: platform:fees keeps the other 80 %.
    assert await system.platform_balance("platform:fees", "BTC") == Decimal("0.000008")


async def _caught_up(system: System, group: str) -> None:
    """Wait until `group` has committed every event published so far (it read them all)."""
    topic = system.topics.events
    consumer = AIOKafkaConsumer(
        bootstrap_servers=system.bootstrap_servers,
        group_id=f"{system.topics.prefix}{group}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions
        ends = await consumer.end_offsets(partitions)
        assert any(ends.values())

        async def done() -> bool:
            for tp in partitions:
                committed = await consumer.committed(tp)
                if ends[tp] and (committed is None or committed < ends[tp]):
                    return False
            return True

        await system.until(done, within=60)
    finally:
        await consumer.stop()


async def test_each_side_of_a_spot_fill_pays_its_own_referrer(system: System) -> None:
    bind = f"{system.trading}/api/referrals/bind"
    for invitee, referrer in (("bea", "rhea"), ("sid", "roy")):
        bound = await system.http.post(
            bind, json={"referrer_id": referrer}, headers=system.auth(invitee)
        )
        assert bound.status_code == 200, bound.text
    funded = await system.wallet.credit(
        user_id="bea",
        currency="GBP",
        amount="1000",
        transaction_type="deposit_bank_transfer",
        reference_id="bank-bea-1",
    )
    assert funded is not None
    assert funded.status == "applied", funded
    await system.deposit("sid", "BTC", "0.1")
    for user, currency, amount, hold in (
        ("bea", "GBP", "520", "order-b"),
        ("sid", "BTC", "0.01", "order-s"),
    ):
        locked = await system.wallet.lock_balance(
            user_id=user,
            currency=currency,
            amount=amount,
            lock_type="spot_order",
            reference_id=f"{hold}:lock",
            hold_id=hold,
        )
        assert locked is not None
        assert locked.status == "applied", locked
    fill = await system.wallet.settle_trade(
        buyer_id="bea",
        seller_id="sid",
        quote_currency="GBP",
        quote_amount="520",
        buyer_hold_id="order-b",
        base_currency="BTC",
        base_amount="0.01",
        seller_hold_id="order-s",
        reference_id="fill-1",
        seller_fee="1.04",
        buyer_fee="0.00002",
    )
    assert fill is not None
    assert fill.status == "applied", fill

    # The seller paid the GBP fee (0.2 × 1.04 = 0.208 → 0.20), the buyer the BTC one.
    async def both_paid() -> bool:
        return await system.earned("roy") == [{"currency": "GBP", "amount": "0.2"}] and (
            await system.earned("rhea") == [{"currency": "BTC", "amount": "0.000004"}]
        )

    await system.until(both_paid, within=30)
    [to_roy] = await system.transactions("roy", "referral_commission")
    assert to_roy["reference_id"] == f"referral:{fill.transaction_id}:GBP"
    assert to_roy["metadata"] == {
        "referred_user_id": "sid",
        "source_transaction_id": fill.transaction_id,
        "source_transaction_type": "spot_trade",
        "fee": "1.04",
        "rate": "0.2",
    }
    [to_rhea] = await system.transactions("rhea", "referral_commission")
    assert to_rhea["metadata"]["referred_user_id"] == "bea"
    assert to_rhea["reference_id"] == f"referral:{fill.transaction_id}:BTC"


async def test_a_double_clicked_savings_transfer_moves_once(system: System) -> None:
    user = f"ike-{uuid.uuid4().hex[:8]}"
    await system.deposit(user, "USDT", "100")
    url = f"{system.trading}/api/savings/transfer"
    body = {"currency": "USDT", "amount": "40", "direction": "to_savings"}
    headers = {**system.auth(user), "Idempotency-Key": "save-40"}
    answers = await asyncio.gather(
        *(system.http.post(url, json=body, headers=headers) for _ in "ab")
    )
    assert sorted(a.status_code for a in answers) in ([202, 202], [202, 409])
    first = next(a.json() for a in answers if a.status_code == 202)
    again = await system.http.post(url, json=body, headers=headers)
    assert (again.status_code, again.json()) == (202, first)
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = await system.http.post(url, json={**body, "amount": "41"}, headers=headers)
    assert (reused.status_code, reused.json()["error"]["code"]) == (422, "idempotency_key_reused")

    async def settled() -> bool:
        return (await system.positions(user)).get("USDT") == ("40", "0")

    await system.until(settled, within=30)
    assert len(await system.transactions(user, "savings_deposit")) == 1
    assert (await system.balances(user, "USDT"))["available_balance"] == Decimal("60")
