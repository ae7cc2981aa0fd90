"""The HTTP services under the input battery, each built in-process over in-memory state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

import httpx
from fastapi import FastAPI

from ipn_gateway.adapters.memory import (
    MemoryDepositOrders,
    MemoryIpnLog,
    MemoryPayments,
    MemoryWithdrawals,
    RecordingPublisher,
)
from ipn_gateway.adapters.nowpayments import NowPaymentsClient
from ipn_gateway.application.deposits import DepositHandler
from ipn_gateway.application.ipn import IpnHandler
from ipn_gateway.application.withdrawals import WithdrawalHandler
from ipn_gateway.bootstrap import utc_now
from ipn_gateway.entrypoints.http import Handlers, include_routes
from ipn_gateway.settings import GatewaySettings
from ipn_gateway.simulator import SimulatorSettings, create_simulator_app
from shared.http import create_app, make_token
from shared.messaging import CreditCommand, LockCommand
from wallet.application.ledger_service import LedgerService
from wallet.bootstrap import build_http_app, build_runtime
from wallet.settings import WalletSettings

OWNER: Final = "alice"
OTHER: Final = "bob"
ADMIN: Final = "ops"


Body = dict[str, Any]


@dataclass(frozen=True)
class Service:
    name: str
    app: FastAPI
    secret: str
    owned: tuple[str, ...]  # GET paths with {user_id}: a user reads only their own
    admin_only: tuple[tuple[str, str, Body | None], ...]  # (method, path, body): admins only
    read_only: tuple[str, ...]  # paths no client may write to
    # (path, a valid body): routes that take an amount from the caller's own token
    amount_routes: tuple[tuple[str, Body], ...] = ()

    def token(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(self.secret, user, roles)}"}


def wallet_service() -> Service:
    # The broker is never started: the HTTP side reads the store only.
    runtime = build_runtime(
        WalletSettings(WALLET_STORE="memory", kafka_bootstrap_servers="127.0.0.1:1")
    )
    opening = [
        CreditCommand(
            user_id=user,
            currency=currency,
            amount="1.5",
            transaction_type="deposit_nowpayments",
            reference_id=f"open-{user}-{currency}",
            metadata={"order_id": f"o-{user}"},
        )
        for user in (OWNER, OTHER)
        for currency in ("BTC", "USD")
    ]
    lock = LockCommand(
        user_id=OWNER,
        currency="BTC",
        amount="0.5",
        transaction_type="p2p_escrow",
        reference_id="t1",
    )
    asyncio.run(LedgerService(runtime.store).handle_batch([*opening, lock]))
    return Service(
        name="wallet",
        app=build_http_app(runtime),
        secret=runtime.settings.auth_jwt_secret.get_secret_value(),
        owned=("/api/wallets/balances/{user_id}", "/api/wallets/transactions/{user_id}"),
        admin_only=(("GET", "/api/wallets/platform-balances", None),),
        read_only=(
            "/api/wallets/balances/alice",
            "/api/wallets/transactions/alice",
            "/api/wallets/platform-balances",
        ),
    )


def gateway_service() -> Service:
    """The gateway's HTTP side over in-memory adapters; the NOWPayments simulator answers its API
    calls in-process, and a recording publisher stands in for Kafka."""
    settings = GatewaySettings()
    simulator = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_simulator_app(SimulatorSettings())),
        base_url="http://nowpayments",
    )
    orders, payments = MemoryDepositOrders(), MemoryPayments()
    publisher = RecordingPublisher()
    handlers = Handlers(
        ipn=IpnHandler(
            secret=settings.nowpayments_ipn_secret.get_secret_value(),
            policy=settings.confirmation_policy(),
            orders=orders,
            payments=payments,
            ipn_log=MemoryIpnLog(),
            publisher=publisher,
            clock=utc_now,
        ),
        deposits=DepositHandler(
            orders=orders,
            provider=NowPaymentsClient(simulator, settings.nowpayments_api_key.get_secret_value()),
            ipn_callback_url=settings.ipn_callback_url,
            clock=utc_now,
        ),
        withdrawals=WithdrawalHandler(
            MemoryWithdrawals(),
            publisher,
            settings.withdrawal_policy(),
            clock=utc_now,
            decision_wait_seconds=0,
        ),
    )

    async def ready() -> bool:
        return True

    app = create_app(title="ipn-gateway", auth_secret=settings.auth_jwt_secret, ready=ready)
    include_routes(app, handlers)
    return Service(
        name="ipn-gateway",
        app=app,
        secret=settings.auth_jwt_secret.get_secret_value(),
        owned=(),
        admin_only=(
            ("POST", "/api/withdrawals/approve", {"withdrawal_id": "wd_unknown"}),
            ("POST", "/api/withdrawals/reject", {"withdrawal_id": "wd_unknown", "reason": "no"}),
        ),
        read_only=("/api/withdrawals",),
        amount_routes=(
            (
                "/api/withdrawals/request",
                {"currency": "BTC", "amount": "0.004", "address": BTC_ADDRESS},
            ),
            (
                "/api/nowpayments/create-deposit",
                {"currency": "btc", "amount": "100", "price_currency": "usd"},
            ),
        ),
    )


BTC_ADDRESS: Final = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
SERVICES: Final = (wallet_service(), gateway_service())
