"""HTTP plumbing: error bodies, bearer auth, /healthz and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import jwt
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from shared.http import AdminUser, ApiError, CurrentUser, create_app, ensure_can_read, make_token

SECRET = "test-secret-" + "x" * 64


class Transfer(BaseModel):
    amount: str
    to_user: str


def build_app() -> tuple[FastAPI, dict[str, bool]]:
    state = {"ready": False}

    async def ready() -> bool:
        return state["ready"]

    app = create_app(title="test", auth_secret=SECRET, ready=ready)

    @app.get("/api/wallets/balances/{user_id}")
    async def balances(user_id: str, user: CurrentUser) -> dict[str, str]:
        ensure_can_read(user, user_id)
        return {"user_id": user_id}

    @app.post("/admin/only")
    async def admin_only(user: AdminUser) -> dict[str, str]:
        return {"by": user.user_id}

    @app.post("/transfers")
    async def transfer(body: Transfer) -> dict[str, str]:
        return {"amount": body.amount}

    @app.get("/conflict")
    async def conflict() -> None:
        raise ApiError(409, "idempotency_conflict", "same reference, other payload")

    # The same path through an included router, as the services declare theirs.
    withdrawals = APIRouter()

    @withdrawals.delete("/conflict")
    async def withdraw_conflict() -> None:
        raise ApiError(409, "idempotency_conflict", "already used")

    app.include_router(withdrawals)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    return app, state


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, bool]]]:
    app, state = build_app()
    # The 500 handler answers and then re-raises for the server's log; keep the answer.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http, state


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


async def test_missing_token_is_401_with_challenge(
    client: tuple[httpx.AsyncClient, object],
) -> None:
    http, _ = client
    response = await http.get("/api/wallets/balances/user123")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "token",
    [
        make_token("another-secret-" + "y" * 64, "user123"),  # bad signature
        make_token(SECRET, "user123", ttl=timedelta(seconds=-5)),  # expired
        jwt.encode({"sub": "user123"}, SECRET, algorithm="HS256"),  # no exp
        jwt.encode({"exp": 9999999999}, SECRET, algorithm="HS256"),  # no sub
        jwt.encode({"sub": "u", "roles": "admin", "exp": 9999999999}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "u", "exp": 9999999999}, SECRET, algorithm="HS512"),  # other algorithm
        "not.a.jwt",
        # Signed, but a subject no wallet command could carry as the user's id.
        make_token(SECRET, "user 123"),
        make_token(SECRET, "user123\n"),
        make_token(SECRET, "u" * 201),
        make_token(SECRET, "user\ud800"),
        jwt.encode({"sub": "", "exp": 9999999999}, SECRET, algorithm="HS256"),
    ],
)
async def test_bad_tokens_are_401(client: tuple[httpx.AsyncClient, object], token: str) -> None:
    http, _ = client
    response = await http.get("/api/wallets/balances/user123", headers=bearer(token))
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_non_bearer_scheme_is_401(client: tuple[httpx.AsyncClient, object]) -> None:
    http, _ = client
    response = await http.get(
        "/api/wallets/balances/user123", headers={"Authorization": "Basic dXNlcjpwYXNz"}
    )
    assert_error(response, 401, "unauthorized")


async def test_a_user_reads_own_data_only(client: tuple[httpx.AsyncClient, object]) -> None:
    http, _ = client
    token = make_token(SECRET, "user123")
    own = await http.get("/api/wallets/balances/user123", headers=bearer(token))
    assert own.status_code == 200
    assert own.json() == {"user_id": "user123"}
    other = await http.get("/api/wallets/balances/user456", headers=bearer(token))
    assert_error(other, 403, "forbidden")


async def test_admin_reads_anyone_and_passes_admin_checks(
    client: tuple[httpx.AsyncClient, object],
) -> None:
    http, _ = client
    admin = make_token(SECRET, "ops1", roles=["admin"])
    user = make_token(SECRET, "user123", roles=["trader"])
    assert (await http.get("/api/wallets/balances/user456", headers=bearer(admin))).json() == {
        "user_id": "user456"
    }
    assert (await http.post("/admin/only", headers=bearer(admin))).json() == {"by": "ops1"}
    assert_error(await http.post("/admin/only", headers=bearer(user)), 403, "forbidden")
    assert_error(await http.post("/admin/only"), 401, "unauthorized")


async def test_bad_input_is_never_a_500(client: tuple[httpx.AsyncClient, object]) -> None:
    http, _ = client
    json_headers = {"content-type": "application/json"}
    assert_error(
        await http.post("/transfers", content=b'{"amount": ', headers=json_headers),
        400,
        "malformed_json",
    )
    missing = await http.post("/transfers", json={"amount": "1"})
    assert_error(missing, 422, "validation_error")
    assert "to_user" in missing.json()["error"]["message"]
    assert_error(await http.post("/transfers", json=[1, 2]), 422, "validation_error")
    assert_error(
        await http.post("/transfers", content=b"", headers=json_headers), 422, "validation_error"
    )


async def test_api_errors_unknown_routes_and_crashes_use_the_error_body(
    client: tuple[httpx.AsyncClient, object],
) -> None:
    http, _ = client
    assert_error(await http.get("/conflict"), 409, "idempotency_conflict")
    assert_error(await http.get("/nowhere"), 404, "not_found")
    refused = await http.put("/conflict")
    assert_error(refused, 405, "method_not_allowed")
    # Two routes share the path: the Allow header names the methods of both.
    assert refused.headers["allow"] == "DELETE, GET"
    crash = await http.get("/boom")
    assert_error(crash, 500, "internal_error")
    assert "internal detail" not in crash.text


async def test_healthz_follows_readiness_and_metrics_are_exposed(
    client: tuple[httpx.AsyncClient, dict[str, bool]],
) -> None:
    http, state = client
    starting = await http.get("/healthz")
    assert (starting.status_code, starting.json()) == (503, {"status": "starting"})
    state["ready"] = True
    ready = await http.get("/healthz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "python_info" in metrics.text


async def test_a_failing_readiness_check_means_not_ready() -> None:
    async def broken() -> bool:
        raise ConnectionError("database down")

    app = create_app(title="t", auth_secret=SECRET, ready=broken)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/healthz")
    assert (response.status_code, response.json()) == (503, {"status": "starting"})


async def test_any_subject_a_command_can_carry_is_a_user(
    client: tuple[httpx.AsyncClient, object],
) -> None:
    http, _ = client
    for user_id in ("u" * 200, "usér-ß:42", "auth0|5f1c"):
        response = await http.get(
            f"/api/wallets/balances/{quote(user_id)}", headers=bearer(make_token(SECRET, user_id))
        )
        assert response.status_code == 200, (user_id, response.text)
        assert response.json()["user_id"] == user_id
