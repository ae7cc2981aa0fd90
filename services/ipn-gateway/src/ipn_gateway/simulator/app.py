"""A NOWPayments stand-in for development and tests.

It answers the API calls the gateway makes (`POST /v1/payment`, `GET /v1/payment/{id}` with the
payment's latest status and amounts, both checking `x-api-key`) and never sends an IPN by itself:
`POST /simulator/payments/{id}/ipn` fires one (or, with `"deliver": false`, loses it on the
way), built and signed the way NOWPayments' Node.js code does it (amounts as JSON numbers printed
by JavaScript, signature over the sorted body), and returns the gateway's answer.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Annotated, Any, Final

import httpx
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr

from ipn_gateway.domain.js_json import JsonNumber, JsonValue, js_stringify
from ipn_gateway.domain.payments import PaymentStatus
from ipn_gateway.domain.signature import sign
from shared.money import MoneyError, format_amount, get_currency, parse_decimal
from shared.settings import ServiceSettings

# Simulated prices in USD, enough to turn a price amount into a pay amount.
USD_PRICES: Final = {
    "BTC": Decimal("65000"),
    "ETH": Decimal("3200"),
    "USDT": Decimal("1"),
    "USDC": Decimal("1"),
    "LTC": Decimal("80"),
    "TRX": Decimal("0.125"),
    "SOL": Decimal("150"),
}
FIAT_IN_USD: Final = {"USD": Decimal("1"), "EUR": Decimal("1.08"), "GBP": Decimal("1.27")}


class SimulatorSettings(ServiceSettings):
    # Unset: HTTP_HOST, as every service.
    nowpayments_simulator_host: str | None = None
    nowpayments_simulator_port: int = 8010
    nowpayments_ipn_secret: SecretStr = SecretStr("dev-only-ipn-secret")
    nowpayments_api_key: SecretStr = SecretStr("dev-only-api-key")
    nowpayments_simulator_ipn_url: str = "http://127.0.0.1:8002/api/nowpayments/ipn"

    @property
    def listen_host(self) -> str:
        return self.nowpayments_simulator_host or self.http_host


@dataclass
class SimulatedPayment:
    payment_id: int
    order_id: str
    order_description: str
    price_amount: str
    price_currency: str
    pay_currency: str
    pay_amount: str
    pay_address: str
    ipn_callback_url: str
    created_at: datetime
    status: str = PaymentStatus.WAITING.value
    actually_paid: str = "0"
    outcome_amount: str | None = None
    outcome_currency: str | None = None
    ipns: list[dict[str, Any]] = field(default_factory=list)

    def api_view(self) -> dict[str, JsonValue]:
        return {
            "payment_id": str(self.payment_id),
            "payment_status": self.status,
            "pay_address": self.pay_address,
            "price_amount": _number(self.price_amount),
            "price_currency": self.price_currency,
            "pay_amount": _number(self.pay_amount),
            "actually_paid": _number(self.actually_paid),
            "pay_currency": self.pay_currency,
            "order_id": self.order_id,
            "order_description": self.order_description,
            "ipn_callback_url": self.ipn_callback_url,
            "created_at": self.created_at.isoformat(),
            "outcome_amount": _number(self.outcome_amount or "0"),
            "outcome_currency": self.outcome_currency or self.pay_currency,
        }


def _number(text: str) -> JsonNumber:
    # NOWPayments' amounts are JavaScript numbers: written as JavaScript prints the double.
    return JsonNumber(js_stringify(JsonNumber(text)))


class JavaScriptJSONResponse(JSONResponse):
    """A body as Node.js writes it: JsonNumber values come out as JavaScript prints them."""

    def render(self, content: Any) -> bytes:
        return js_stringify(content).encode("utf-8")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"statusCode": status, "code": code, "message": message}, status)


def _pay_amount(price_amount: Decimal, price_currency: str, pay_currency: str) -> Decimal:
    price = get_currency(price_currency)
    coin = get_currency(pay_currency)
    usd = price_amount * (FIAT_IN_USD.get(price.code) or USD_PRICES[price.code])
    return (usd / USD_PRICES[coin.code]).quantize(coin.quantum, rounding=ROUND_DOWN)


def _address(coin: str) -> str:
    token = secrets.token_hex(20)
    if coin in {"ETH", "USDC"}:
        return f"0x{token}"
    if coin in {"TRX", "USDT"}:
        return "T" + secrets.token_hex(17)[:33].replace("0", "1")
    return f"bc1q{token}"


def _js_amount(text: str | None) -> str | None:
    """An amount NOWPayments could send: decimal text a JavaScript double holds (finite). Checked
    before the payment changes: stored, a bad one made every later read of the payment a 500."""
    if text is None:
        return None
    try:
        value = parse_decimal(text)
    except MoneyError as error:
        raise ValueError(error.message) from None
    if not math.isfinite(float(value)):
        raise ValueError(f"{text[:40]!r} is beyond what a JavaScript number holds")
    return text


class FireIpnBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: PaymentStatus
    actually_paid: Annotated[str | None, AfterValidator(_js_amount)] = None
    outcome_amount: Annotated[str | None, AfterValidator(_js_amount)] = None
    outcome_currency: str | None = None
    # Deliberately wrong signature, to test the gateway's refusal.
    tamper: bool = False
    # False: the status changes but the IPN is lost on its way (a missed webhook), so only
    # `GET /v1/payment/{id}` tells the gateway.
    deliver: bool = True


def create_simulator_app(settings: SimulatorSettings | None = None) -> FastAPI:
    config = settings or SimulatorSettings()
    payments: dict[int, SimulatedPayment] = {}
    app = FastAPI(title="nowpayments-simulator")
    app.state.payments = payments

    def key_ok(key: str | None) -> bool:
        expected = config.nowpayments_api_key.get_secret_value().encode()
        return key is not None and hmac.compare_digest(key.encode(), expected)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/payment")
    async def create_payment(
        request: Request, x_api_key: str | None = Header(default=None)
    ) -> JSONResponse:
        if not key_ok(x_api_key):
            return _error(403, "INVALID_API_KEY", "Invalid api key")
        try:
            body = json.loads(await request.body(), parse_float=str, parse_int=str)
            price_amount = parse_decimal(str(body["price_amount"]))
            price_currency = str(body.get("price_currency", "usd")).lower()
            pay_currency = str(body["pay_currency"]).lower()
            coin = get_currency(pay_currency).code
            pay_amount = _pay_amount(price_amount, price_currency, pay_currency)
        except (ValueError, KeyError, TypeError, MoneyError) as error:
            return _error(400, "INVALID_REQUEST_PARAMS", f"invalid request: {error}"[:200])
        if price_amount <= 0 or pay_amount <= 0:
            return _error(400, "AMOUNT_MINIMAL_ERROR", "amountTo is too small")
        payment = SimulatedPayment(
            payment_id=5_000_000_000 + secrets.randbelow(4_000_000_000),
            order_id=str(body.get("order_id", "")),
            order_description=str(body.get("order_description", "")),
            price_amount=format_amount(price_amount),
            price_currency=price_currency,
            pay_currency=pay_currency,
            pay_amount=format_amount(pay_amount),
            pay_address=_address(coin),
            ipn_callback_url=str(
                body.get("ipn_callback_url") or config.nowpayments_simulator_ipn_url
            ),
            created_at=datetime.now(UTC),
        )
        payments[payment.payment_id] = payment
        return JavaScriptJSONResponse(payment.api_view(), 201)

    @app.get("/v1/payment/{payment_id}")
    async def get_payment(
        payment_id: int, x_api_key: str | None = Header(default=None)
    ) -> JSONResponse:
        if not key_ok(x_api_key):
            return _error(403, "INVALID_API_KEY", "Invalid api key")
        payment = payments.get(payment_id)
        if payment is None:
            return _error(404, "PAYMENT_NOT_FOUND", "Payment not found")
        return JavaScriptJSONResponse(payment.api_view())

    @app.post("/simulator/payments/{payment_id}/ipn")
    async def fire_ipn(payment_id: int, fire: FireIpnBody) -> JSONResponse:
        payment = payments.get(payment_id)
        if payment is None:
            return _error(404, "PAYMENT_NOT_FOUND", "Payment not found")
        body = ipn_body(payment, fire)
        raw = js_stringify(body).encode("utf-8")
        if not fire.deliver:
            payment.status = fire.status.value
            return JSONResponse({"delivered": False, "ipn": raw.decode()})
        signature = sign(body, config.nowpayments_ipn_secret.get_secret_value())
        if fire.tamper:
            signature = ("0" if signature[0] != "0" else "1") + signature[1:]
        async with httpx.AsyncClient(timeout=10.0) as client:
            try:
                response = await client.post(
                    payment.ipn_callback_url,
                    content=raw,
                    headers={"content-type": "application/json", "x-nowpayments-sig": signature},
                )
            except httpx.HTTPError as error:
                return _error(502, "IPN_DELIVERY_FAILED", repr(error)[:200])
        payment.status = fire.status.value
        payment.ipns.append({"body": raw.decode(), "status_code": response.status_code})
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        return JSONResponse(
            {"status_code": response.status_code, "response": answer, "ipn": raw.decode()}
        )

    return app


def ipn_body(payment: SimulatedPayment, fire: FireIpnBody) -> dict[str, JsonValue]:
    """An IPN as NOWPayments sends it: its field order, its numbers, a fee object."""
    actually_paid = fire.actually_paid or (
        payment.pay_amount if fire.status is PaymentStatus.FINISHED else payment.actually_paid
    )
    outcome_amount = fire.outcome_amount or actually_paid
    coin = get_currency(payment.pay_currency)
    payment.actually_paid = actually_paid
    payment.outcome_amount = outcome_amount
    payment.outcome_currency = fire.outcome_currency or payment.pay_currency
    return {
        "payment_id": JsonNumber(str(payment.payment_id)),
        "invoice_id": None,
        "payment_status": fire.status.value,
        "pay_address": payment.pay_address,
        "price_amount": _number(payment.price_amount),
        "price_currency": payment.price_currency,
        "pay_amount": _number(payment.pay_amount),
        "actually_paid": _number(actually_paid),
        "pay_currency": payment.pay_currency,
        "order_id": payment.order_id,
        "order_description": payment.order_description,
        "purchase_id": str(payment.payment_id + 1),
        "outcome_amount": _number(outcome_amount),
        "outcome_currency": fire.outcome_currency or payment.pay_currency,
        "fee": {
            "currency": coin.code.lower(),
            "depositFee": _number("0"),
            "withdrawalFee": _number("0"),
            "serviceFee": _number("0"),
        },
    }
