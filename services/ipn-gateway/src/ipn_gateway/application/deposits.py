"""Creating a NOWPayments deposit for a user and remembering whose it is."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ipn_gateway.application.ports import DepositOrders, PaymentProvider
from ipn_gateway.application.records import DepositOrder
from ipn_gateway.domain.errors import GatewayError
from shared.money import MoneyError, format_amount, get_currency, parse_amount


def new_order_id() -> str:
    # Unguessable: an order id is what ties a payment to a user.
    return f"dep_{secrets.token_hex(12)}"


@dataclass
class DepositHandler:
    orders: DepositOrders
    provider: PaymentProvider
    ipn_callback_url: str
    clock: Callable[[], datetime]

    async def create(
        self, user_id: str, pay_currency: str, price_amount: object, price_currency: str
    ) -> dict[str, Any]:
        try:
            coin = get_currency(pay_currency)
            price = get_currency(price_currency)
            amount = parse_amount(price_amount, price)
        except MoneyError as error:
            raise GatewayError(error.code, error.message) from None
        if coin.kind != "crypto":
            raise GatewayError("currency_not_depositable", f"{coin.code} is not a crypto currency")
        order = DepositOrder(
            order_id=new_order_id(),
            user_id=user_id,
            pay_currency=pay_currency.strip().lower(),
            price_amount=format_amount(amount),
            price_currency=price_currency.strip().lower(),
            created_at=self.clock(),
        )
        await self.orders.add(order)
        created = await self.provider.create_payment(
            price_amount=order.price_amount,
            price_currency=order.price_currency,
            # NOWPayments tickers name the network too (usdttrc20): pass the user's choice on.
            pay_currency=order.pay_currency,
            order_id=order.order_id,
            order_description=f"Deposit {coin.code}",
            ipn_callback_url=self.ipn_callback_url,
        )
        await self.orders.attach_payment(order.order_id, created)
        return {
            "order_id": order.order_id,
            "payment_id": created.payment_id,
            "pay_address": created.pay_address,
            "pay_currency": created.pay_currency,
            "pay_amount": created.pay_amount,
        }
