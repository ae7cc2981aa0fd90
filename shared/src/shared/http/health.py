"""``GET /healthz`` (ready or not) and ``GET /metrics`` (Prometheus) for every HTTP service."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from shared.http.text import TextCheckedRoute

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[bool]]


def health_router(ready: Readiness) -> APIRouter:
    """200 ``{"status": "ok"}`` once ``ready()`` says so, 503 ``{"status": "starting"}`` before."""
    router = APIRouter(route_class=TextCheckedRoute)

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        try:
            is_ready = await ready()
        except Exception:
            # A failing check means "not ready", never a 500 that hides the state.
            log.warning("readiness check failed", exc_info=True)
            is_ready = False
        if is_ready:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "starting"}, status_code=503)

    return router


def metrics_router(registry: CollectorRegistry = REGISTRY) -> APIRouter:
    router = APIRouter(route_class=TextCheckedRoute)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
