"""The HTTP services under the input battery, each built in-process over in-memory state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from fastapi import FastAPI

from shared.http import make_token
from shared.messaging import CreditCommand, LockCommand
from wallet.application.ledger_service import LedgerService
from wallet.bootstrap import build_http_app, build_runtime
from wallet.settings import WalletSettings

OWNER: Final = "alice"
OTHER: Final = "bob"
ADMIN: Final = "ops"


@dataclass(frozen=True)
class Service:
    name: str
    app: FastAPI
    secret: str
    owned: tuple[str, ...]  # GET paths with {user_id}: a user reads only their own
    admin_only: tuple[str, ...]  # GET paths only admins may call
    read_only: tuple[str, ...]  # paths no client may write to

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
        user_id=OWNER, currency="BTC", amount="0.5", transaction_type="p2p", reference_id="t1"
    )
    asyncio.run(LedgerService(runtime.store).handle_batch([*opening, lock]))
    return Service(
        name="wallet",
        app=build_http_app(runtime),
        secret=runtime.settings.auth_jwt_secret.get_secret_value(),
        owned=("/api/wallets/balances/{user_id}", "/api/wallets/transactions/{user_id}"),
        admin_only=("/api/wallets/platform-balances",),
        read_only=(
            "/api/wallets/balances/alice",
            "/api/wallets/transactions/alice",
            "/api/wallets/platform-balances",
        ),
    )


# The ipn-gateway joins this list once it exists on main.
SERVICES: Final = (wallet_service(),)
