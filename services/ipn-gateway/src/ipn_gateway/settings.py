"""Configuration of the gateway (environment variables; JSON for the maps and lists)."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Annotated, Final, Self
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from ipn_gateway.domain.payments import ConfirmationPolicy, PaymentStatus
from ipn_gateway.domain.withdrawals import WithdrawalPolicy
from shared.money import get_currency, parse_amount
from shared.settings import ServiceSettings

# On by default: a stolen session cannot empty an account in one go. Amounts include the fee.
DEFAULT_WITHDRAWAL_MAX_PER_REQUEST: Final = {
    "BTC": "2",
    "ETH": "30",
    "USDT": "100000",
    "USDC": "100000",
    "LTC": "1000",
    "TRX": "500000",
    "SOL": "500",
}
DEFAULT_WITHDRAWAL_DAILY_LIMIT: Final = {
    "BTC": "5",
    "ETH": "75",
    "USDT": "250000",
    "USDC": "250000",
    "LTC": "2500",
    "TRX": "1250000",
    "SOL": "1250",
}
DEFAULT_WITHDRAWAL_FEES: Final = {
    "BTC": "0.0001",
    "ETH": "0.001",
    "USDT": "1",
    "USDC": "1",
    "LTC": "0.001",
    "TRX": "1",
    "SOL": "0.01",
}


def _amounts_by_currency(raw: object) -> dict[str, Decimal]:
    # Amounts in settings are strings like everywhere else ("0.0001"), checked against the scale.
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object of currency → amount")
    result: dict[str, Decimal] = {}
    for code, amount in raw.items():
        currency = get_currency(code)
        result[currency.code] = parse_amount(amount, currency, allow_zero=True)
    return result


AmountsByCurrency = Annotated[dict[str, Decimal], BeforeValidator(_amounts_by_currency)]


def _is_local(url: str) -> bool:
    """Loopback, unspecified or a name that means this machine."""
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host in ("", "localhost") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


class GatewaySettings(ServiceSettings):
    ipn_gateway_http_port: int = 8002
    # Unset: HTTP_HOST, as every service (the image sets HTTP_HOST=0.0.0.0 for all of them).
    ipn_gateway_http_host: str | None = None
    ipn_gateway_mongodb_database: str = "exchange"

    nowpayments_ipn_secret: SecretStr = SecretStr("dev-only-ipn-secret")
    nowpayments_api_url: str = "http://127.0.0.1:8010"
    nowpayments_api_key: SecretStr = SecretStr("dev-only-api-key")
    nowpayments_timeout_seconds: float = 10.0
    # Where NOWPayments sends IPNs for payments we create; unset: this gateway on loopback.
    nowpayments_ipn_callback_url: str | None = None
    # Sender addresses or networks allowed to post IPNs; empty list: any sender (the signature
    # is what is trusted).
    nowpayments_ipn_allowed_ips: list[str] = Field(default_factory=list)
    # The reverse proxies in front of the gateway (addresses or networks). The client is the
    # right-most X-Forwarded-For hop that is not one of them; empty: the header is ignored.
    ipn_gateway_trusted_proxies: list[str] = Field(default_factory=list)
    # Posts whose signature does not match, per sender and overall, per minute: beyond these
    # they are answered 429 and not stored.
    nowpayments_ipn_untrusted_per_sender_per_minute: int = Field(30, ge=1)
    nowpayments_ipn_untrusted_per_minute: int = Field(600, ge=1)
    # Missed webhooks: deposits still open after this many seconds are polled at NOWPayments
    # (GET /v1/payment/{id}) every `interval`; 0 turns the poller off.
    nowpayments_poll_after_seconds: float = Field(1800.0, ge=0)
    nowpayments_poll_interval_seconds: float = Field(600.0, gt=0)

    # Confirmation policy: the status at which a coin is credited (confirmed, sending or finished).
    nowpayments_default_credit_at: PaymentStatus = PaymentStatus.FINISHED
    nowpayments_credit_at: dict[str, PaymentStatus] = Field(default_factory=dict)
    nowpayments_credit_partially_paid: bool = False

    withdrawal_fees: AmountsByCurrency = Field(
        default_factory=lambda: _amounts_by_currency(DEFAULT_WITHDRAWAL_FEES)
    )
    withdrawal_max_per_request: AmountsByCurrency = Field(
        default_factory=lambda: _amounts_by_currency(DEFAULT_WITHDRAWAL_MAX_PER_REQUEST)
    )
    withdrawal_daily_limit: AmountsByCurrency = Field(
        default_factory=lambda: _amounts_by_currency(DEFAULT_WITHDRAWAL_DAILY_LIMIT)
    )
    withdrawal_max_open_per_user: int = Field(5, ge=1)
    withdrawal_decision_wait_seconds: float = 5.0
    # A withdrawal waiting this long on the wallet's answer without moving (its result lost, or
    # dead-lettered) has its last command sent again, once per period; the wallet answers with
    # the first outcome.
    withdrawal_ask_again_after_seconds: float = Field(60.0, gt=0)
    # A deposit's credit the wallet has not answered this long after it was recorded (its
    # result lost, or a failure the wallet recorded no outcome for) is sent again, once per
    # period per payment.
    deposit_credit_ask_again_after_seconds: float = Field(60.0, gt=0)

    outbox_relay_interval_seconds: float = Field(
        5.0, gt=0, validation_alias="IPN_GATEWAY_OUTBOX_RELAY_INTERVAL_SECONDS"
    )
    results_consumer_group: str = Field(
        "ipn-gateway", validation_alias="IPN_GATEWAY_RESULTS_CONSUMER_GROUP"
    )
    results_session_timeout_ms: int = Field(
        6000, validation_alias="IPN_GATEWAY_RESULTS_SESSION_TIMEOUT_MS"
    )
    results_heartbeat_interval_ms: int = Field(
        1000, validation_alias="IPN_GATEWAY_RESULTS_HEARTBEAT_INTERVAL_MS"
    )
    # A result that fails this many times (the database being away aside) is dead-lettered.
    results_max_attempts: int = Field(5, ge=1, validation_alias="IPN_GATEWAY_RESULTS_MAX_ATTEMPTS")
    # /healthz answers 503 while one result has been failing for longer than this.
    results_stuck_after_seconds: float = Field(
        60.0, gt=0, validation_alias="IPN_GATEWAY_RESULTS_STUCK_AFTER_SECONDS"
    )

    @model_validator(mode="after")
    def _policies_are_valid(self) -> Self:
        self.confirmation_policy()  # refuses e.g. crediting at "waiting"
        return self

    @model_validator(mode="after")
    def _production_talks_to_the_real_nowpayments(self) -> Self:
        """With IS_STAGING=false: the API and the callback are set, and not on loopback (the
        development simulator and a gateway NOWPayments cannot reach)."""
        if self.is_staging:
            return self
        for name, url in (
            ("NOWPAYMENTS_API_URL", self.nowpayments_api_url),
            ("NOWPAYMENTS_IPN_CALLBACK_URL", self.nowpayments_ipn_callback_url),
        ):
            if not url or _is_local(url):
                raise ValueError(f"IS_STAGING=false needs {name} set to a non-loopback address")
        return self

    @field_validator("nowpayments_ipn_allowed_ips", "ipn_gateway_trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    @property
    def listen_host(self) -> str:
        return self.ipn_gateway_http_host or self.http_host

    @property
    def ipn_callback_url(self) -> str:
        return (
            self.nowpayments_ipn_callback_url
            or f"http://127.0.0.1:{self.ipn_gateway_http_port}/api/nowpayments/ipn"
        )

    def allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(e, strict=False) for e in self.nowpayments_ipn_allowed_ips
        )

    def trusted_proxies(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(e, strict=False) for e in self.ipn_gateway_trusted_proxies
        )

    def confirmation_policy(self) -> ConfirmationPolicy:
        return ConfirmationPolicy(
            default_credit_at=self.nowpayments_default_credit_at,
            credit_at=dict(self.nowpayments_credit_at),
            credit_partially_paid=self.nowpayments_credit_partially_paid,
        )

    def withdrawal_policy(self) -> WithdrawalPolicy:
        return WithdrawalPolicy(
            fees=dict(self.withdrawal_fees),
            max_per_request=dict(self.withdrawal_max_per_request),
            daily_limit=dict(self.withdrawal_daily_limit),
            max_open_per_user=self.withdrawal_max_open_per_user,
        )
