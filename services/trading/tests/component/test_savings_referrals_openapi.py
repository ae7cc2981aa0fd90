"""The OpenAPI document of savings and referrals names every error answer with the error body."""

from __future__ import annotations

from trading.bootstrap import build_service, create_trading_app
from trading.referrals.entrypoints import build_referrals_feature
from trading.savings.entrypoints import build_savings_feature
from trading.settings import TradingSettings


def test_openapi_documents_every_error_answer(jwt_secret: str) -> None:
    service = build_service(
        TradingSettings(auth_jwt_secret=jwt_secret),
        features=[build_savings_feature, build_referrals_feature],
    )
    paths = create_trading_app(service).openapi()["paths"]
    expected = {
        ("/api/savings/products", "get"): {"401"},
        ("/api/savings/transfer", "post"): {"400", "401", "422"},
        ("/api/savings/transfers/{transfer_id}", "get"): {"401", "404", "422"},
        ("/api/savings/positions", "get"): {"401"},
        ("/api/admin/savings/accrue", "post"): {"400", "401", "403", "422", "503"},
        ("/api/referrals/bind", "post"): {"400", "401", "409", "422"},
        ("/api/referrals/summary", "get"): {"401"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, set(responses))
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorBody")
    assert paths["/api/savings/transfer"]["post"]["responses"]["202"]


def test_openapi_documents_the_idempotency_key_of_a_transfer(jwt_secret: str) -> None:
    service = build_service(
        TradingSettings(auth_jwt_secret=jwt_secret), features=[build_savings_feature]
    )
    operation = create_trading_app(service).openapi()["paths"]["/api/savings/transfer"]["post"]
    [header] = operation["parameters"]
    assert (header["name"], header["in"], header["required"]) == (
        "Idempotency-Key",
        "header",
        False,
    )
    assert {"400", "409", "422"} <= set(operation["responses"])
    assert "idempotency_key_reused" in operation["responses"]["422"]["description"]
