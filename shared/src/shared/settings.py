"""Configuration from the environment: the base every service's settings class extends."""

from __future__ import annotations

from typing import Final, Self

from pydantic import SecretBytes, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.messaging.topics import Topics

# Every development default of a secret starts with this, so production mode can refuse all of them.
DEV_SECRET_PREFIX: Final = "dev-only"  # noqa: S105 - a marker, not a secret
# HS256 signs tokens with AUTH_JWT_SECRET: a shorter key can be found offline from any one token,
# and then any token minted, an admin's included (RFC 7518: a key at least as long as the hash).
MIN_JWT_SECRET_BYTES: Final = 32


class DevelopmentSecretError(ValueError):
    """A secret still holds its development default outside staging."""


class ServiceSettings(BaseSettings):
    """Settings common to every service; a subclass adds its own fields (and secrets).

    Any ``SecretStr`` / ``SecretBytes`` field whose value starts with ``dev-only`` is refused when
    ``IS_STAGING=false``, so a subclass gets the production check for its secrets by declaring them.
    """

    # hide_input_in_errors: a refusal must never print the secrets it was given.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

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
        if len(self.auth_jwt_secret.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise DevelopmentSecretError(
                f"IS_STAGING=false needs AUTH_JWT_SECRET of at least {MIN_JWT_SECRET_BYTES} bytes"
                " (tokens are signed with it; a shorter key can be guessed from any token)"
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
                # In any case and with any spacing: " Dev-Only-…" is the default all the same.
                if not text.strip() or text.strip().casefold().startswith(DEV_SECRET_PREFIX):
                    found.append(name)
        return found

    def _env_name(self, name: str) -> str:
        field = type(self).model_fields[name]
        if isinstance(field.validation_alias, str):
            return field.validation_alias.upper()
        return f"{self.model_config.get('env_prefix', '')}{name}".upper()
