"""HTTP: the NOWPayments IPN callback, deposit creation and withdrawals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, JsonValue

from ipn_gateway.application.deposits import DepositHandler
from ipn_gateway.application.ipn import MAX_IPN_BYTES, IpnHandler, IpnRequest
from ipn_gateway.application.withdrawals import WithdrawalHandler
from ipn_gateway.domain.errors import (
    Conflict,
    Forbidden,
    GatewayError,
    IpnRejected,
    NotFound,
    UpstreamRefused,
    UpstreamUnavailable,
)
from shared.http import AdminUser, CurrentUser, error_response, error_responses

# Refusal codes whose HTTP status is not the default of their kind.
_STATUS_BY_CODE: Final = {
    "invalid_signature": 401,
    "body_too_large": 413,
    "busy": 503,
    "withdrawal_in_progress": 409,
}
_STATUS_BY_KIND: Final[tuple[tuple[type[GatewayError], int], ...]] = (
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (UpstreamUnavailable, 502),
    (UpstreamRefused, 400),
    (IpnRejected, 400),
)


def http_status(error: GatewayError) -> int:
    if error.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[error.code]
    for kind, status in _STATUS_BY_KIND:
        if isinstance(error, kind):
            return status
    return 400


async def _gateway_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return error_response(http_status(exc), exc.code, exc.message)


class _Body(BaseModel):
    # Unknown fields (status, user_id, fee, ...) are refused: no mass assignment.
    model_config = ConfigDict(extra="forbid")


class CreateDepositBody(_Body):
    currency: str
    amount: JsonValue  # checked by the money rules, so a JSON number gets a precise code
    price_currency: str = "usd"


class WithdrawalRequestBody(_Body):
    currency: str
    amount: JsonValue
    address: str


class ApproveBody(_Body):
    withdrawal_id: str


class RejectBody(_Body):
    withdrawal_id: str
    reason: str


@dataclass
class Handlers:
    ipn: IpnHandler
    deposits: DepositHandler
    withdrawals: WithdrawalHandler
    trust_forwarded_for: bool = False


def _client_ip(request: Request, trust_forwarded_for: bool) -> str | None:
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return request.client.host if request.client else None


async def _read_limited(request: Request, limit: int) -> tuple[bytes, bool]:
    """At most limit + 1 bytes of the body, and whether there was more than limit."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[: limit + 1], True
    return b"".join(chunks), False


def nowpayments_router(handlers: Handlers) -> APIRouter:
    # Documented so that clients and schema-driven tests know every answer and its error body.
    router = APIRouter(
        prefix="/api/nowpayments", tags=["nowpayments"], responses=error_responses(400, 401)
    )

    @router.post("/ipn", responses=error_responses(403, 413, 503))
    async def ipn(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > MAX_IPN_BYTES
        raw, cut = (b"", True) if too_large else await _read_limited(request, MAX_IPN_BYTES)
        ipn_request = IpnRequest(
            raw_body=raw,
            signature=request.headers.get("x-nowpayments-sig"),
            headers=dict(request.headers),
            client_ip=_client_ip(request, handlers.trust_forwarded_for),
            too_large=cut,
        )
        verdict = await handlers.ipn.handle(ipn_request)
        return JSONResponse({"status": verdict})

    @router.post("/create-deposit", responses=error_responses(422, 502))
    async def create_deposit(body: CreateDepositBody, user: CurrentUser) -> dict[str, Any]:
        return await handlers.deposits.create(
            user.user_id, body.currency, body.amount, body.price_currency
        )

    return router


def withdrawals_router(handlers: Handlers) -> APIRouter:
    router = APIRouter(
        prefix="/api/withdrawals", tags=["withdrawals"], responses=error_responses(401)
    )
    decisions = error_responses(400, 403, 404, 409, 422, 502)

    @router.post("/request", status_code=202, responses=error_responses(400, 409, 422, 502))
    async def request_withdrawal(body: WithdrawalRequestBody, user: CurrentUser) -> dict[str, Any]:
        withdrawal = await handlers.withdrawals.request(
            user.user_id, body.currency, body.amount, body.address
        )
        public = withdrawal.public()
        return {k: public[k] for k in ("withdrawal_id", "status", "amount", "fee", "currency")}

    @router.post("/approve", responses=decisions)
    async def approve(body: ApproveBody, admin: AdminUser) -> dict[str, Any]:
        withdrawal = await handlers.withdrawals.approve(admin.user_id, body.withdrawal_id)
        return withdrawal.public()

    @router.post("/reject", responses=decisions)
    async def reject(body: RejectBody, admin: AdminUser) -> dict[str, Any]:
        withdrawal = await handlers.withdrawals.reject(
            admin.user_id, body.withdrawal_id, body.reason
        )
        return withdrawal.public()

    @router.get("")
    async def list_withdrawals(user: CurrentUser) -> dict[str, Any]:
        items = await handlers.withdrawals.list(user.user_id, user.is_admin)
        return {"items": [w.public() for w in items]}

    return router


def include_routes(app: FastAPI, handlers: Handlers) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.include_router(nowpayments_router(handlers))
    app.include_router(withdrawals_router(handlers))
