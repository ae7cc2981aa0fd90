"""Settings: environment wins, and production mode refuses development secrets."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretBytes, SecretStr, ValidationError

from shared.settings import DevelopmentSecretError, ServiceSettings


class GatewaySettings(ServiceSettings):
    nowpayments_ipn_secret: SecretStr = SecretStr("dev-only-ipn-secret")
    nowpayments_api_key: SecretStr = SecretStr("dev-only-api-key")
    signing_key: SecretBytes = Field(
        SecretBytes(b"dev-only-signing"), validation_alias="GATEWAY_SIGNING_KEY"
    )
    http_port: int = Field(8002, validation_alias="IPN_GATEWAY_HTTP_PORT")


REAL_JWT_SECRET = "a-real-secret-of-32-bytes-or-more!"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "IS_STAGING",
        "KAFKA_BOOTSTRAP_SERVERS",
        "MONGODB_URL",
        "AUTH_JWT_SECRET",
        "NOWPAYMENTS_IPN_SECRET",
        "NOWPAYMENTS_API_KEY",
        "GATEWAY_SIGNING_KEY",
        "IPN_GATEWAY_HTTP_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_staging_accepts_development_defaults() -> None:
    settings = GatewaySettings()
    assert settings.is_staging
    assert settings.auth_jwt_secret.get_secret_value() == "dev-only-jwt-secret-not-for-production"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert sorted(settings.development_secrets()) == [
        "auth_jwt_secret",
        "nowpayments_api_key",
        "nowpayments_ipn_secret",
        "signing_key",
    ]


def test_production_refuses_every_development_secret_by_its_variable_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IS_STAGING", "false")
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "real-api-key")
    with pytest.raises(ValidationError) as caught:
        GatewaySettings()
    message = str(caught.value)
    assert "AUTH_JWT_SECRET" in message
    assert "NOWPAYMENTS_IPN_SECRET" in message
    assert "GATEWAY_SIGNING_KEY" in message
    assert "NOWPAYMENTS_API_KEY" not in message
    assert "dev-only-ipn-secret" not in message  # never echo a secret
    assert isinstance(caught.value.errors()[0]["ctx"]["error"], DevelopmentSecretError)


def test_production_starts_with_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IS_STAGING", "false")
    monkeypatch.setenv("AUTH_JWT_SECRET", REAL_JWT_SECRET)
    monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET", "real-ipn")
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "real-key")
    monkeypatch.setenv("GATEWAY_SIGNING_KEY", "real-signing")
    monkeypatch.setenv("IPN_GATEWAY_HTTP_PORT", "9002")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = GatewaySettings()
    assert not settings.is_staging
    assert settings.http_port == 9002
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.development_secrets() == []
    assert REAL_JWT_SECRET not in repr(settings)


def test_base_settings_alone_refuse_the_default_jwt_secret_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IS_STAGING", "0")
    with pytest.raises(ValidationError, match="AUTH_JWT_SECRET"):
        ServiceSettings()
    monkeypatch.setenv("IS_STAGING", "true")
    assert ServiceSettings().is_staging


@pytest.mark.parametrize(
    "secret",
    [
        " dev-only-jwt-secret-not-for-production",
        "DEV-ONLY-JWT-SECRET-NOT-FOR-PRODUCTION",
        "Dev-Only-anything",
    ],
)
def test_production_refuses_the_development_marker_in_any_case_or_spacing(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("IS_STAGING", "false")
    monkeypatch.setenv("AUTH_JWT_SECRET", secret + "-padded-past-thirty-two-bytes")
    with pytest.raises(ValidationError, match="development defaults: AUTH_JWT_SECRET"):
        ServiceSettings()


@pytest.mark.parametrize("secret", ["secret", "changeme", "x" * 31])
def test_production_refuses_a_jwt_secret_short_enough_to_guess(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    # With "secret" anyone holding a token of their own found the key offline and signed
    # {"sub": anyone, "roles": ["admin"]}: HS256 is only as strong as its key.
    monkeypatch.setenv("IS_STAGING", "false")
    monkeypatch.setenv("AUTH_JWT_SECRET", secret)
    with pytest.raises(ValidationError, match="AUTH_JWT_SECRET of at least 32 bytes") as caught:
        ServiceSettings()
    assert secret not in str(caught.value).replace("AUTH_JWT_SECRET", "")
    monkeypatch.setenv("AUTH_JWT_SECRET", "x" * 32)
    assert not ServiceSettings().is_staging
