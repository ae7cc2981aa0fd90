"""Gateway settings from the environment: maps as JSON, policies checked, no dev secrets in production."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from ipn_gateway.domain.payments import PaymentStatus
from ipn_gateway.settings import GatewaySettings
from ipn_gateway.simulator.app import SimulatorSettings


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IPN_GATEWAY_HTTP_PORT", "NOWPAYMENTS_API_URL", "NOWPAYMENTS_IPN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = GatewaySettings()
    assert settings.ipn_gateway_http_port == 8002
    assert settings.nowpayments_api_url == "http://127.0.0.1:8010"
    assert settings.nowpayments_ipn_secret.get_secret_value() == "dev-only-ipn-secret"
    assert settings.nowpayments_api_key.get_secret_value() == "dev-only-api-key"
    assert settings.allowed_networks() == ()
    assert settings.confirmation_policy().default_credit_at is PaymentStatus.FINISHED
    assert settings.withdrawal_policy().fees["BTC"] == Decimal("0.0001")
    assert settings.ipn_callback_url == "http://127.0.0.1:8002/api/nowpayments/ipn"
    assert settings.withdrawal_ask_again_after_seconds == 60


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOWPAYMENTS_CREDIT_AT", '{"trx": "confirmed"}')
    monkeypatch.setenv("NOWPAYMENTS_CREDIT_PARTIALLY_PAID", "true")
    monkeypatch.setenv("NOWPAYMENTS_IPN_ALLOWED_IPS", '["192.0.2.0/24", "2001:db8::1"]')
    monkeypatch.setenv("WITHDRAWAL_FEES", '{"btc": "0.0002"}')
    monkeypatch.setenv("WITHDRAWAL_DAILY_LIMIT", '{"BTC": "2.5"}')
    settings = GatewaySettings()
    assert settings.confirmation_policy().credits(PaymentStatus.CONFIRMED, "trx")
    assert settings.confirmation_policy().credit_partially_paid
    assert len(settings.allowed_networks()) == 2
    assert settings.withdrawal_policy().fees == {"BTC": Decimal("0.0002")}
    assert settings.withdrawal_policy().daily_limit == {"BTC": Decimal("2.5")}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOWPAYMENTS_DEFAULT_CREDIT_AT", "waiting"),
        ("NOWPAYMENTS_IPN_ALLOWED_IPS", '["not-an-ip"]'),
        ("WITHDRAWAL_FEES", '{"btc": "0.000000001"}'),
        ("WITHDRAWAL_FEES", '{"doge": "1"}'),
        ("WITHDRAWAL_ASK_AGAIN_AFTER_SECONDS", "0"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        GatewaySettings()


def test_production_refuses_development_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IS_STAGING", "false")
    monkeypatch.setenv("AUTH_JWT_SECRET", "a-real-jwt-secret-from-the-vault-0123456789")
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "real-key")
    monkeypatch.setenv("NOWPAYMENTS_API_URL", "https://api.nowpayments.io")
    monkeypatch.setenv(
        "NOWPAYMENTS_IPN_CALLBACK_URL", "https://pay.example.com/api/nowpayments/ipn"
    )
    with pytest.raises(ValidationError, match="NOWPAYMENTS_IPN_SECRET"):
        GatewaySettings()
    for empty in ("", "   "):
        monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET", empty)
        with pytest.raises(ValidationError, match="NOWPAYMENTS_IPN_SECRET"):
            GatewaySettings()
    monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET", "real-ipn-secret")
    assert not GatewaySettings().is_staging


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOWPAYMENTS_API_URL", "http://127.0.0.1:8010"),
        ("NOWPAYMENTS_API_URL", "http://localhost:8010"),
        ("NOWPAYMENTS_API_URL", "http://[::1]:8010"),
        ("NOWPAYMENTS_API_URL", "http://0.0.0.0:8010"),
        ("NOWPAYMENTS_IPN_CALLBACK_URL", ""),
        ("NOWPAYMENTS_IPN_CALLBACK_URL", "http://127.0.0.2:8002/api/nowpayments/ipn"),
    ],
)
def test_production_refuses_loopback_nowpayments_addresses(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("IS_STAGING", "false")
    monkeypatch.setenv("AUTH_JWT_SECRET", "a-real-jwt-secret-from-the-vault-0123456789")
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "real-key")
    monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET", "real-ipn-secret")
    monkeypatch.setenv("NOWPAYMENTS_API_URL", "https://api.nowpayments.io")
    monkeypatch.setenv(
        "NOWPAYMENTS_IPN_CALLBACK_URL", "https://pay.example.com/api/nowpayments/ipn"
    )
    assert GatewaySettings().nowpayments_api_url == "https://api.nowpayments.io"
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        GatewaySettings()


def test_withdrawal_limits_are_on_by_default() -> None:
    policy = GatewaySettings().withdrawal_policy()
    assert set(policy.max_per_request) == set(policy.fees) == set(policy.daily_limit)
    assert all(policy.daily_limit[c] >= policy.max_per_request[c] for c in policy.fees)


ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what a container listens on)


@pytest.mark.parametrize(
    ("environment", "host"),
    [
        ({}, "127.0.0.1"),
        # The image sets HTTP_HOST=0.0.0.0 for every service: the gateway listened on the
        # container's loopback all the same, out of reach of its published port.
        ({"HTTP_HOST": ALL_INTERFACES}, ALL_INTERFACES),
        ({"HTTP_HOST": ALL_INTERFACES, "IPN_GATEWAY_HTTP_HOST": "10.0.0.5"}, "10.0.0.5"),
    ],
)
def test_the_gateway_and_the_simulator_listen_on_http_host_unless_told_their_own(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], host: str
) -> None:
    for name in ("HTTP_HOST", "IPN_GATEWAY_HTTP_HOST", "NOWPAYMENTS_SIMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert GatewaySettings().listen_host == host
    simulator = SimulatorSettings()
    assert simulator.listen_host == environment.get("HTTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NOWPAYMENTS_SIMULATOR_HOST", "10.0.0.6")
    assert SimulatorSettings().listen_host == "10.0.0.6"
