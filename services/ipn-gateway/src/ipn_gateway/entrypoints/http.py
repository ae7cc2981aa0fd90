"""HTTP: the NOWPayments IPN callback, deposit creation and withdrawals."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ipn_gateway.application.deposits import DepositHandler
from ipn_gateway.application.ipn import MAX_IPN_BYTES, IpNetwork, IpnHandler, IpnRequest
from ipn_gateway.application.records import ReviewStatus
from ipn_gateway.application.reviews import ReviewHandler
from ipn_gateway.application.withdrawals import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    WithdrawalHandler,
)
from ipn_gateway.domain.errors import (
    Conflict,
    Forbidden,
    GatewayError,
    IpnRejected,
    NotFound,
    UpstreamRefused,
    UpstreamUnavailable,
)
from ipn_gateway.entrypoints.shapes import review_view, withdrawal_view
from shared.http import (
    AdminUser,
    CurrentUser,
    QueryParameters,
    TextCheckedRoute,
    error_response,
    error_responses,
)
from shared.http.idempotency import (
    Idempotency,
    IdempotencyKey,
    IdempotencyStore,
    MemoryIdempotencyStore,
    idempotency_responses,
)

# Refusal codes whose HTTP status is not the default of their kind.
_STATUS_BY_CODE: Final = {
    "invalid_signature": 401,
    "body_too_large": 413,
    "busy": 503,
    "rate_limited": 429,
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


class DismissBody(_Body):
    reason: str


class WithdrawalsQuery(QueryParameters):
    """The list's query parameters, as the wallet's history and the P2P and spot lists take them:
    an unknown one is refused (422 `validation_error`) and one left empty is absent. A `limit` out
    of range or a `status` or `cursor` too long is 422 `validation_error`; an unknown status is
    400 `invalid_status`, and a `cursor` this API did not return 400 `invalid_cursor`."""

    status: str | None = Field(default=None, max_length=20)
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(default=None, max_length=200)


@dataclass
class Handlers:
    ipn: IpnHandler
    deposits: DepositHandler
    withdrawals: WithdrawalHandler
    reviews: ReviewHandler
    # The reverse proxies in front of the gateway: only they may say who the client is.
    trusted_proxies: tuple[IpNetwork, ...] = ()
    # Where Idempotency-Key claims and answers are kept (MongoDB when deployed).
    idempotency: IdempotencyStore = field(default_factory=MemoryIdempotencyStore)


def _trusted(address: str, proxies: tuple[IpNetwork, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in proxies)


def client_ip(peer: str | None, forwarded_for: str, proxies: tuple[IpNetwork, ...]) -> str | None:
    """The right-most address not one of our proxies, walking back from the connection's peer
    through X-Forwarded-For. Hops left of it were written by the client and prove nothing."""
    if peer is None or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


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
        route_class=TextCheckedRoute,
        prefix="/api/nowpayments",
        tags=["nowpayments"],
        responses=error_responses(400, 401),
    )

    @router.post("/ipn", responses=error_responses(403, 413, 429, 503))
    async def ipn(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > MAX_IPN_BYTES
        raw, cut = (b"", True) if too_large else await _read_limited(request, MAX_IPN_BYTES)
        ipn_request = IpnRequest(
            raw_body=raw,
            signature=request.headers.get("x-nowpayments-sig"),
            headers=dict(request.headers),
            client_ip=client_ip(
                request.client.host if request.client else None,
                request.headers.get("x-forwarded-for", ""),
                handlers.trusted_proxies,
            ),
            too_large=cut,
        )
        verdict = await handlers.ipn.handle(ipn_request)
        return JSONResponse({"status": verdict})

    @router.post("/create-deposit", responses=error_responses(422, 502))
    async def create_deposit(body: CreateDepositBody, user: CurrentUser) -> dict[str, Any]:
        return await handlers.deposits.create(
            user.user_id, body.currency, body.amount, body.price_currency
        )

    decisions = error_responses(403, 404, 409, 422)

    @router.get("/reviews", responses=error_responses(403, 422))
    async def list_reviews(
        admin: AdminUser,
        status: ReviewStatus | None = None,
    ) -> dict[str, Any]:
        items = await handlers.reviews.list(status)
        return {"items": [review_view(i) for i in items]}

    @router.post("/reviews/{review_id}/approve", responses=decisions)
    async def approve_review(
        review_id: Annotated[str, Path(max_length=64)], admin: AdminUser
    ) -> dict[str, Any]:
        return review_view(await handlers.reviews.approve(admin.user_id, review_id))

    @router.post("/reviews/{review_id}/dismiss", responses=decisions)
    async def dismiss_review(
        review_id: Annotated[str, Path(max_length=64)], body: DismissBody, admin: AdminUser
    ) -> dict[str, Any]:
        return review_view(await handlers.reviews.dismiss(admin.user_id, review_id, body.reason))

    return router


def withdrawals_router(handlers: Handlers) -> APIRouter:
    router = APIRouter(
        route_class=TextCheckedRoute,
        prefix="/api/withdrawals",
        tags=["withdrawals"],
        responses=error_responses(401),
    )
    decisions = error_responses(400, 403, 404, 409, 422, 502)

    once = Idempotency(
        handlers.idempotency, "ipn-gateway:POST /api/withdrawals/request", (GatewayError,)
    )

    @router.post(
        "/request",
        status_code=202,
        response_model=dict[str, Any],
        responses={**error_responses(400, 409, 422, 502), **idempotency_responses()},
    )
    async def request_withdrawal(
        body: WithdrawalRequestBody, user: CurrentUser, key: IdempotencyKey
    ) -> dict[str, Any] | JSONResponse:
        async def work() -> dict[str, Any]:
            withdrawal = await handlers.withdrawals.request(
                user.user_id, body.currency, body.amount, body.address, once.named_id(user, key)
            )
            public = withdrawal_view(withdrawal)
            return {k: public[k] for k in ("withdrawal_id", "status", "amount", "fee", "currency")}

        return await once.run(user, key, work, status_code=202)

    @router.post("/approve", responses=decisions)
    async def approve(body: ApproveBody, admin: AdminUser) -> dict[str, Any]:
        withdrawal = await handlers.withdrawals.approve(admin.user_id, body.withdrawal_id)
        return withdrawal_view(withdrawal)

    @router.post("/reject", responses=decisions)
    async def reject(body: RejectBody, admin: AdminUser) -> dict[str, Any]:
        withdrawal = await handlers.withdrawals.reject(
            admin.user_id, body.withdrawal_id, body.reason
        )
        return withdrawal_view(withdrawal)

    @router.get("", responses=error_responses(400, 422))
    async def list_withdrawals(
        user: CurrentUser, query: Annotated[WithdrawalsQuery, Query()]
    ) -> dict[str, Any]:
        """A user's own withdrawals, everyone's for an admin; newest first, `next_cursor` pages."""
        page = await handlers.withdrawals.page(
            user.user_id, user.is_admin, status=query.status, limit=query.limit, cursor=query.cursor
        )
        return {"items": [withdrawal_view(w) for w in page.items], "next_cursor": page.next_cursor}

    @router.get("/{withdrawal_id}", responses=error_responses(404, 422))
    async def get_withdrawal(
        withdrawal_id: Annotated[str, Path(max_length=64)], user: CurrentUser
    ) -> dict[str, Any]:
        found = await handlers.withdrawals.get(user.user_id, user.is_admin, withdrawal_id)
        return withdrawal_view(found)

    return router


def include_routes(app: FastAPI, handlers: Handlers) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.include_router(nowpayments_router(handlers))
    app.include_router(withdrawals_router(handlers))
