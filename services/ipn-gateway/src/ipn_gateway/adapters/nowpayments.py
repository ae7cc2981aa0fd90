"""The NOWPayments API (or its simulator) over HTTP."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

import httpx
import structlog

from ipn_gateway.application.records import CreatedPayment
from ipn_gateway.domain.errors import GatewayError, UpstreamRefused, UpstreamUnavailable
from ipn_gateway.domain.js_json import JsonValue, parse_json
from shared.money import format_amount

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=3.0)


def _text(value: Any) -> str:
    # NOWPayments sends amounts as JSON numbers, read as Decimal (never float) and written plainly.
    return format_amount(value) if isinstance(value, Decimal) else str(value)


class NowPaymentsClient:
    """`POST /v1/payment` with the API key; failures become UpstreamUnavailable/UpstreamRefused."""

    def __init__(self, http: httpx.AsyncClient, api_key: str) -> None:
        self._http = http
        self._api_key = api_key

    async def create_payment(
        self,
        *,
        price_amount: str,
        price_currency: str,
        pay_currency: str,
        order_id: str,
        order_description: str,
        ipn_callback_url: str,
    ) -> CreatedPayment:
        fields = {
            "price_currency": price_currency,
            "pay_currency": pay_currency,
            "order_id": order_id,
            "order_description": order_description,
            "ipn_callback_url": ipn_callback_url,
        }
        # The API takes price_amount as a JSON number: its validated decimal text goes out as is.
        body = json.dumps(fields, separators=(",", ":"))[:-1] + f',"price_amount":{price_amount}}}'
        try:
            response = await self._http.post(
                "/v1/payment",
                content=body.encode(),
                headers={"x-api-key": self._api_key, "content-type": "application/json"},
            )
        except httpx.HTTPError as error:
            log.warning("nowpayments.unreachable", error=repr(error))
            raise UpstreamUnavailable(
                "nowpayments_unavailable", "NOWPayments did not answer"
            ) from None
        if response.status_code >= 500:
            raise UpstreamUnavailable(
                "nowpayments_unavailable", f"NOWPayments answered {response.status_code}"
            )
        if response.status_code in (401, 403):
            # Our API key is wrong: the platform's fault, not the user's request.
            log.error("nowpayments.api_key_refused", status=response.status_code)
            raise UpstreamUnavailable("nowpayments_unavailable", "NOWPayments refused our API key")
        payload = _json_object(response)
        if response.status_code >= 400:
            code = str(payload.get("code") or "nowpayments_refused")[:64]
            message = str(payload.get("message") or "NOWPayments refused the payment")[:300]
            raise UpstreamRefused(f"nowpayments_{code}".lower(), message)
        try:
            return CreatedPayment(
                payment_id=_text(payload["payment_id"]),
                pay_address=str(payload["pay_address"]),
                pay_currency=str(payload["pay_currency"]),
                pay_amount=_text(payload["pay_amount"]),
                price_amount=_text(payload.get("price_amount", price_amount)),
                price_currency=str(payload.get("price_currency", price_currency)),
            )
        except KeyError as missing:
            raise UpstreamUnavailable(
                "nowpayments_unavailable", f"NOWPayments answer lacks {missing}"
            ) from None

    async def payment_status(self, payment_id: str) -> dict[str, JsonValue]:
        """`GET /v1/payment/{id}`: the payment as NOWPayments sees it, numbers as written."""
        if not payment_id.isdigit():
            raise UpstreamRefused("nowpayments_invalid_payment_id", "a payment id is digits")
        try:
            response = await self._http.get(
                f"/v1/payment/{payment_id}", headers={"x-api-key": self._api_key}
            )
        except httpx.HTTPError as error:
            log.warning("nowpayments.unreachable", error=repr(error))
            raise UpstreamUnavailable(
                "nowpayments_unavailable", "NOWPayments did not answer"
            ) from None
        if response.status_code >= 500 or response.status_code in (401, 403):
            raise UpstreamUnavailable(
                "nowpayments_unavailable", f"NOWPayments answered {response.status_code}"
            )
        if response.status_code >= 400:
            raise UpstreamRefused(
                "nowpayments_payment_not_found", f"NOWPayments answered {response.status_code}"
            )
        try:
            body = parse_json(response.content)
        except GatewayError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamUnavailable("nowpayments_unavailable", "NOWPayments answer is not JSON")
        return body


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        raise UpstreamUnavailable(
            "nowpayments_unavailable", "NOWPayments answered something that is not JSON"
        ) from None
    if not isinstance(payload, dict):
        raise UpstreamUnavailable("nowpayments_unavailable", "NOWPayments answer is not an object")
    return payload
