"""The OpenAPI document of the whole service, every feature included: each error answer it
documents is the contract's error body, never FastAPI's own validation schema (which a route with
a path parameter gets unless it declares its 422)."""

from __future__ import annotations

import httpx

from shared.http import make_token
from trading.bootstrap import build_service, create_trading_app
from trading.settings import TradingSettings


def test_every_documented_error_is_the_error_body(jwt_secret: str) -> None:
    service = build_service(TradingSettings(auth_jwt_secret=jwt_secret))
    schema = create_trading_app(service).openapi()
    errors = [
        (method, path, status, answer["content"]["application/json"]["schema"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
        if status.startswith(("4", "5"))
    ]
    assert len(errors) > 50, errors
    for method, path, status, body in errors:
        assert body == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_a_body_that_is_not_json_is_a_documented_400(jwt_secret: str) -> None:
    """Bytes that are not JSON (or not even UTF-8) are refused before any route runs: every route
    that reads a body documents that 400."""
    app = create_trading_app(build_service(TradingSettings(auth_jwt_secret=jwt_secret)))
    with_bodies = [
        (method, path)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    ]
    assert len(with_bodies) >= 9, with_bodies
    headers = {
        "Authorization": f"Bearer {make_token(jwt_secret, 'ops', ['admin'])}",
        "Content-Type": "application/json",
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trading") as http:
        for method, path in with_bodies:
            documented = app.openapi()["paths"][path][method]["responses"]
            assert "400" in documented, (method, path)
            for body in (b"\xff\xfe", b"{not json"):
                answer = await http.request(method, path, content=body, headers=headers)
                assert answer.status_code == 400, (method, path, body, answer.text)
                assert set(answer.json()) == {"error"}, answer.text
