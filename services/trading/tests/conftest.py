"""Fixtures of the trading service's tests: a fake clock and signed bearer headers (apps served
on real ports and polling: `serve_app` / `until` from shared.testing)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.http import make_token
from trading.testing import FakeClock

JWT_SECRET = "trading-tests-jwt-secret-of-at-least-32-bytes"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def auth(user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(JWT_SECRET, user, roles)}"}


Auth = Callable[..., dict[str, str]]


@pytest.fixture(scope="session")
def auth_headers() -> Auth:
    """auth_headers("amy") / auth_headers("ops", "admin"): a bearer header signed with JWT_SECRET."""
    return auth


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return JWT_SECRET
