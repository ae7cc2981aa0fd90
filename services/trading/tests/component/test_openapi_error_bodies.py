"""The OpenAPI document of the whole service, every feature included: each error answer it
documents is the contract's error body, never FastAPI's own validation schema (which a route with
a path parameter gets unless it declares its 422)."""

from __future__ import annotations

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
