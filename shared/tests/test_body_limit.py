"""Request bodies are capped (shared.http.limits): a body declared or sent longer than 1 MiB is
413 `body_too_large` in the contract's error shape, and the route never runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Request
from pydantic import BaseModel

from shared.http import create_app
from shared.http.limits import MAX_BODY_BYTES


class Named(BaseModel):
    name: str


def build() -> tuple[httpx.AsyncClient, list[int]]:
    async def ready() -> bool:
        return True

    app = create_app(title="test", auth_secret="x" * 32, ready=ready)
    ran: list[int] = []

    @app.post("/model")
    async def model(body: Named) -> dict[str, int]:
        ran.append(len(body.name))
        return {"size": len(body.name)}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        size = len(await request.body())
        ran.append(size)
        return {"size": size}

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return http, ran


async def test_a_body_up_to_the_limit_is_read() -> None:
    http, ran = build()
    async with http:
        response = await http.post("/echo", content=b"x" * MAX_BODY_BYTES)
    assert (response.status_code, response.json()) == (200, {"size": MAX_BODY_BYTES})
    assert ran == [MAX_BODY_BYTES]


async def test_a_body_declared_too_long_is_refused_before_it_is_read() -> None:
    http, ran = build()
    async with http:
        response = await http.post("/echo", content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert ran == []


@pytest.mark.parametrize("declared", ["-1", "lots"])
async def test_a_length_that_is_not_one_is_refused(declared: str) -> None:
    http, ran = build()
    async with http:
        response = await http.post("/echo", content=b"{}", headers={"content-length": declared})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")
    assert ran == []


async def test_a_body_sent_without_a_length_stops_being_read_past_the_limit() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * (MAX_BODY_BYTES // 8)

    http, ran = build()
    async with http:
        response = await http.post("/echo", content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert ran == []


async def test_a_route_whose_body_fastapi_parses_refuses_it_too() -> None:
    # FastAPI turns most errors while it reads a body into 400: the refusal must stay a 413.
    async def document() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"a" * (MAX_BODY_BYTES // 8)
        yield b'"}'

    http, ran = build()
    async with http:
        response = await http.post(
            "/model", content=document(), headers={"content-type": "application/json"}
        )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")
    assert ran == []
