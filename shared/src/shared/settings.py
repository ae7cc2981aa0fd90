"""Configuration from the environment: the base every service's settings class extends."""

from __future__ import annotations

from typing import Final, Self

from pydantic import SecretBytes, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.messaging.topics import Topics

# Every development default of a secret starts with this, so production mode can refuse all of them.
DEV_SECRET_PREFIX: Final = "dev-only"  # noqa: S105 - a marker, not a secret


class DevelopmentSecretError(ValueError):
    """A secret still holds its development default outside staging."""


class ServiceSettings(BaseSettings):
    """Settings common to every service; a subclass adds its own fields (and secrets).

    Any ``SecretStr`` / ``SecretBytes`` field whose value starts with ``dev-only`` is refused when
    ``IS_STAGING=false``, so a subclass gets the production check for its secrets by declaring them.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    is_staging: bool = True
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Empty in production: the contract's topic names. Tests give each module its own namespace.
    kafka_topic_prefix: str = ""
    mongodb_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    auth_jwt_secret: SecretStr = SecretStr(f"{DEV_SECRET_PREFIX}-jwt-secret-not-for-production")
    # Loopback by default; containers set HTTP_HOST=0.0.0.0. Each service adds its port field.
    http_host: str = "127.0.0.1"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Self:
        if self.is_staging:
            return self
        offending = sorted(self._env_name(name) for name in self.development_secrets())
        if offending:
            raise DevelopmentSecretError(
                "IS_STAGING=false but these secrets are empty or hold development defaults: "
                + ", ".join(offending)
            )
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka_topic_prefix)

    def development_secrets(self) -> list[str]:
        """Names of the secret fields whose value is a development default (or empty)."""
        found = []
        for name, value in self:
            if isinstance(value, SecretStr | SecretBytes):
                secret = value.get_secret_value()
                text = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
                if not text.strip() or text.startswith(DEV_SECRET_PREFIX):
                    found.append(name)
        return found

    def _env_name(self, name: str) -> str:
        field = type(self).model_fields[name]
        if isinstance(field.validation_alias, str):
            return field.validation_alias.upper()
        return f"{self.model_config.get('env_prefix', '')}{name}".upper()
