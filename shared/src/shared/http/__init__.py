"""HTTP plumbing shared by the services: error bodies, bearer auth, health and metrics."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from shared.http.auth import (
    ADMIN_ROLE,
    AdminUser,
    CurrentUser,
    User,
    configure_auth,
    current_user,
    decode_token,
    ensure_can_read,
    make_token,
    require_admin,
)
from shared.http.errors import (
    ApiError,
    ErrorBody,
    error_body,
    error_response,
    error_responses,
    install_error_handlers,
)
from shared.http.health import Readiness, health_router, metrics_router
from shared.http.limits import limit_request_bodies
from shared.http.query import QueryParameters
from shared.http.text import TextCheckedRoute

__all__ = [
    "ADMIN_ROLE",
    "AdminUser",
    "ApiError",
    "CurrentUser",
    "ErrorBody",
    "QueryParameters",
    "Readiness",
    "TextCheckedRoute",
    "User",
    "configure_auth",
    "create_app",
    "current_user",
    "decode_token",
    "ensure_can_read",
    "error_body",
    "error_response",
    "error_responses",
    "health_router",
    "install_error_handlers",
    "limit_request_bodies",
    "make_token",
    "metrics_router",
    "require_admin",
]


def create_app(
    *,
    title: str,
    auth_secret: str | SecretStr,
    ready: Readiness,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    version: str = "0.1.0",
) -> FastAPI:
    """A FastAPI app with the error handlers, bearer auth, ``/healthz`` and ``/metrics``."""
    app = FastAPI(title=title, version=version, lifespan=lifespan)
    install_error_handlers(app)
    limit_request_bodies(app)
    configure_auth(app, auth_secret)
    app.include_router(health_router(ready))
    app.include_router(metrics_router())
    return app
