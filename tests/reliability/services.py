"""The HTTP services under the input battery, each built in-process over in-memory state."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from fastapi import FastAPI

from ipn_gateway.adapters.memory import (
    MemoryDepositOrders,
    MemoryIpnLog,
    MemoryPayments,
    MemoryReviews,
    MemoryWithdrawals,
    RecordingPublisher,
)
from ipn_gateway.adapters.nowpayments import NowPaymentsClient
from ipn_gateway.application.deposits import DepositHandler
from ipn_gateway.application.ipn import IpnHandler
from ipn_gateway.application.reviews import ReviewHandler
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
class AmountRoute:
    """A POST route that takes money from the caller: a valid body and its money fields."""

    path: str
    body: Body
    fields: tuple[str, ...] = ("amount",)
    # The route's own code where it refuses a value for a reason of its own that is as precise
    # (a spot order's step or tick): AMOUNTS' code → its code; "not a string" → its code for any
    # JSON value but a string (a field typed as a string), "null" → its code for null.
    codes: Mapping[str, str] = field(default_factory=dict)

    def expected_code(self, amount: Any, code: str) -> str:
        if amount is None and "null" in self.codes:
            return self.codes["null"]
        if not isinstance(amount, str) and "not a string" in self.codes:
            return self.codes["not a string"]
        return self.codes.get(code, code)


@dataclass(frozen=True)
class Service:
    name: str
    secret: str
    # GET paths of the owner's things ({user_id}, or {id} = `owned_id`, or a name of
    # `owned_ids`): only they read them
    owned: tuple[str, ...]
    admin_only: tuple[tuple[str, str, Body | None], ...]  # (method, path, body): admins only
    read_only: tuple[str, ...]  # paths no client may write to
    # Built in-process (`app`) or running on a loopback port (`url`).
    app: FastAPI | None = None
    url: str = ""
    # Routes that take an amount from the caller's own token.
    amount_routes: tuple[AmountRoute, ...] = ()
    # The id of an object OWNER owns, for `owned` paths with {id}.
    owned_id: str = ""
    owned_ids: Mapping[str, str] = field(default_factory=dict)
    # How another user is refused an owned object: 403, or 404 where ids are not confirmed.
    foreign_status: int = 403
    foreign_codes: frozenset[str] = frozenset({"forbidden"})
    # (method, path, body, status): what another user trying to act on OWNER's things gets.
    owned_actions: tuple[tuple[str, str, Body | None, int], ...] = ()
    # (path, text): lists of one's own things; OWNER's shows `text` (an id of theirs), nobody
    # else's does.
    owned_lists: tuple[tuple[str, str], ...] = ()
    # (path, body, id): OWNER created the object `id` by POSTing `body` with Idempotency-Key
    # `live_services.KEY`; the same key replays it to OWNER only.
    owned_keys: tuple[tuple[str, Body, str], ...] = ()
    # The code a user gets from an admin route.
    admin_refusal_code: str = "forbidden"
    # Operations ("GET /path") that take no token: every other one answers 401 without one.
    public: frozenset[str] = frozenset()

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
        owned=(
            "/api/wallets/balances/{user_id}",
            "/api/wallets/transactions/{user_id}",
            "/api/wallets/portfolio/{user_id}",
        ),
        admin_only=(("GET", "/api/wallets/platform-balances", None),),
        read_only=(
            "/api/wallets/balances/alice",
            "/api/wallets/transactions/alice",
            "/api/wallets/portfolio/alice",
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
    orders, payments, reviews = MemoryDepositOrders(), MemoryPayments(), MemoryReviews()
    publisher = RecordingPublisher()
    withdrawals = WithdrawalHandler(
        MemoryWithdrawals(),
        publisher,
        settings.withdrawal_policy(),
        clock=utc_now,
        decision_wait_seconds=0,
    )
    owners = asyncio.run(withdrawals.request(OWNER, "BTC", "0.004", BTC_ADDRESS))
    handlers = Handlers(
        ipn=IpnHandler(
            secret=settings.nowpayments_ipn_secret.get_secret_value(),
            policy=settings.confirmation_policy(),
            orders=orders,
            payments=payments,
            ipn_log=MemoryIpnLog(),
            publisher=publisher,
            clock=utc_now,
            reviews=reviews,
        ),
        deposits=DepositHandler(
            orders=orders,
            provider=NowPaymentsClient(simulator, settings.nowpayments_api_key.get_secret_value()),
            ipn_callback_url=settings.ipn_callback_url,
            clock=utc_now,
        ),
        withdrawals=withdrawals,
        reviews=ReviewHandler(reviews, payments, publisher, utc_now, orders),
    )

    async def ready() -> bool:
        return True

    app = create_app(title="ipn-gateway", auth_secret=settings.auth_jwt_secret, ready=ready)
    include_routes(app, handlers)
    return Service(
        name="ipn-gateway",
        app=app,
        secret=settings.auth_jwt_secret.get_secret_value(),
        owned=("/api/withdrawals/{id}",),
        owned_id=owners.withdrawal_id,
        foreign_status=404,
        foreign_codes=frozenset({"withdrawal_not_found"}),
        public=frozenset({"POST /api/nowpayments/ipn"}),  # signed by NOWPayments instead
        admin_only=(
            ("POST", "/api/withdrawals/approve", {"withdrawal_id": "wd_unknown"}),
            ("POST", "/api/withdrawals/reject", {"withdrawal_id": "wd_unknown", "reason": "no"}),
            ("GET", "/api/nowpayments/reviews", None),
            ("POST", "/api/nowpayments/reviews/rv_unknown/approve", None),
            ("POST", "/api/nowpayments/reviews/rv_unknown/dismiss", {"reason": "no"}),
        ),
        read_only=("/api/withdrawals", f"/api/withdrawals/{owners.withdrawal_id}"),
        amount_routes=(
            AmountRoute(
                "/api/withdrawals/request",
                {"currency": "BTC", "amount": "0.004", "address": BTC_ADDRESS},
            ),
            AmountRoute(
                "/api/nowpayments/create-deposit",
                {"currency": "btc", "amount": "100", "price_currency": "usd"},
            ),
        ),
    )


BTC_ADDRESS: Final = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
SERVICES: Final = (wallet_service(), gateway_service())
