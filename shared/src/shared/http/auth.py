"""Bearer JWT (HS256) authentication: who is calling, and may they read this user's data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from shared.http.errors import ApiError
from shared.messaging.commands import is_identifier

ADMIN_ROLE: Final = "admin"
ALGORITHM: Final = "HS256"
_SECRET_STATE: Final = "auth_jwt_secret"  # noqa: S105 - the attribute name on app.state
_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}

# auto_error=False: a missing header must produce our error body, not FastAPI's default.
_bearer = HTTPBearer(auto_error=False, description="JWT signed with AUTH_JWT_SECRET (HS256)")


@dataclass(frozen=True)
class User:
    user_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


def make_token(
    secret: str | SecretStr,
    sub: str,
    roles: Sequence[str] = (),
    ttl: timedelta | float = timedelta(hours=1),
) -> str:
    """A signed token as the exchange issues them (for tests and development)."""
    lifetime = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
    now = datetime.now(UTC)
    claims = {"sub": sub, "roles": list(roles), "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, _secret_text(secret), algorithm=ALGORITHM)


def decode_token(token: str, secret: str | SecretStr) -> User:
    """The caller behind ``token``; ApiError 401 if it is not valid, signed and unexpired."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, _secret_text(secret), algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise _unauthorized("invalid token") from None
    sub, roles = claims.get("sub"), claims.get("roles", [])
    # A subject that could not be a user's id in the wallet's commands: every action would pass
    # here and fail at the wallet.
    if not is_identifier(sub):
        raise _unauthorized("invalid token")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise _unauthorized("invalid token")
    return User(user_id=sub, roles=frozenset(roles))


def configure_auth(app: FastAPI, secret: str | SecretStr) -> None:
    """Set the key that ``CurrentUser`` verifies tokens with for this app."""
    setattr(app.state, _SECRET_STATE, secret)


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token")
    secret = getattr(request.app.state, _SECRET_STATE, None)
    if secret is None:
        raise RuntimeError("configure_auth(app, secret) was not called")
    return decode_token(credentials.credentials, secret)


CurrentUser = Annotated[User, Depends(current_user)]


def user_of_token(request: Request, token: str) -> User:
    """The caller behind a token found elsewhere than the Authorization header (a page's cookie),
    verified with the app's key exactly as ``CurrentUser`` does; ApiError 401 if it is not valid."""
    secret = getattr(request.app.state, _SECRET_STATE, None)
    if secret is None:
        raise RuntimeError("configure_auth(app, secret) was not called")
    return decode_token(token, secret)


async def require_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "admin role required")
    return user


AdminUser = Annotated[User, Depends(require_admin)]


def ensure_can_read(user: User, user_id: str) -> None:
    """A user reads only their own data; admins read anyone's (403 otherwise)."""
    if user.user_id != user_id and not user.is_admin:
        raise ApiError(403, "forbidden", "not allowed to access another user's data")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers=_CHALLENGE)


def _secret_text(secret: str | SecretStr) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret
