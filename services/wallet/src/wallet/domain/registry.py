"""The registry of transaction types: which command types may use a `transaction_type`, and which
account money comes from or goes to (CONTRACT.md, "Ledger accounts and transaction types").

A transaction type not in here, or used with a command type it does not allow, is rejected
`unknown_transaction_type` and moves nothing: no producer can create money under a made-up name.
Pure data and lookups, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from wallet.domain.accounts import (
    PLATFORM_FEES,
    PLATFORM_INTEREST,
    PLATFORM_LIQUIDITY,
    Bucket,
    external_account,
)


@dataclass(frozen=True, slots=True)
class TransactionTypeSpec:
    """One registered transaction type.

    counterparty: the account a credit takes its money from, a debit / release pays into, or an
    exchange trades against (platform:liquidity); None where money only moves between users and
    their own buckets.
    credit_bucket: the user bucket a credit lands in; None for a credit that changes no user
    wallet (credit_account then names the platform account that receives it).
    """

    name: str
    command_types: frozenset[str]
    summary: str  # where money comes from and goes to, for people
    counterparty: str | None = None
    credit_bucket: Bucket | None = "available"
    credit_account: str | None = None

    def allows(self, command_type: str) -> bool:
        return command_type in self.command_types


def _spec(
    name: str,
    *command_types: str,
    summary: str,
    counterparty: str | None = None,
    credit_bucket: Bucket | None = "available",
    credit_account: str | None = None,
) -> TransactionTypeSpec:
    return TransactionTypeSpec(
        name, frozenset(command_types), summary, counterparty, credit_bucket, credit_account
    )


WITHDRAWALS: Final = external_account("withdrawals")

_LEGACY: Final = external_account("legacy_migration")
_LIQUIDITY_TRADE: Final = (
    "user ↔ platform:liquidity (+ fee → platform:fees); insufficient_liquidity if it cannot cover"
)

_SPECS: Final = (
    # Money entering the ledger.
    _spec(
        "deposit_nowpayments",
        "credit",
        summary="external:nowpayments → user available",
        counterparty=external_account("nowpayments"),
    ),
    _spec(
        "deposit_bank_transfer",
        "credit",
        summary="external:bank → user available (fiat)",
        counterparty=external_account("bank"),
    ),
    # Money leaving it: the seed's direct debit, and the gateway's lock → release / unlock.
    _spec(
        "withdrawal",
        "debit",
        "release_locked",
        summary="user available (debit) or its hold (release) → external:withdrawals",
        counterparty=WITHDRAWALS,
    ),
    _spec("withdrawal_lock", "lock", summary="user available → the withdrawal's hold"),
    _spec("withdrawal_unlock", "unlock", summary="the withdrawal's hold → user available"),
    _spec(
        "withdrawal_release",
        "release_locked",
        summary="the withdrawal's hold → external:withdrawals (+ fee → platform:fees)",
        counterparty=WITHDRAWALS,
    ),
    # P2P: escrow, cancel, completion (locked → buyer, or released out as the seed did), payment.
    _spec("p2p_escrow", "lock", summary="seller available → the trade's hold"),
    _spec("p2p_cancelled", "unlock", summary="the trade's hold → seller available"),
    _spec(
        "p2p_completed",
        "transfer_locked",
        "release_locked",
        summary="the trade's hold → buyer available (transfer_locked) or external:withdrawals"
        " (release_locked), + fee → platform:fees",
        counterparty=WITHDRAWALS,
    ),
    _spec("p2p_payment", "transfer", summary="user available → another user's available"),
    # Trading against the platform's inventory, and between users.
    _spec("swap", "exchange", summary=_LIQUIDITY_TRADE, counterparty=PLATFORM_LIQUIDITY),
    _spec("express_buy", "exchange", summary=_LIQUIDITY_TRADE, counterparty=PLATFORM_LIQUIDITY),
    _spec(
        "spot_order",
        "lock",
        "unlock",
        summary="an order's hold (hold_id = order id, a reference per step)",
    ),
    _spec(
        "spot_trade",
        "settle_trade",
        summary="buyer's hold → seller (quote), seller's hold → buyer (base); fees → platform:fees",
    ),
    # Savings.
    _spec("savings_deposit", "savings_in", summary="user available → savings"),
    _spec("savings_withdrawal", "savings_out", summary="user savings → available"),
    _spec(
        "savings_interest",
        "credit",
        summary="platform:interest → user savings",
        counterparty=PLATFORM_INTEREST,
        credit_bucket="savings",
    ),
    # Platform moves: commissions come out of collected fees, never minted; funding of the
    # exchange's inventory comes from the treasury and touches no user wallet.
    _spec(
        "referral_commission",
        "credit",
        summary="platform:fees → user available; insufficient_platform_funds if fees cannot cover",
        counterparty=PLATFORM_FEES,
    ),
    _spec(
        "liquidity_funding",
        "credit",
        summary="external:treasury → platform:liquidity (user_id = the admin; no user wallet)",
        counterparty=external_account("treasury"),
        credit_bucket=None,
        credit_account=PLATFORM_LIQUIDITY,
    ),
    # Balances carried over from the legacy system, and the release of legacy holds.
    _spec(
        "legacy_migration",
        "credit",
        summary="external:legacy_migration → user available",
        counterparty=_LEGACY,
    ),
    _spec(
        "legacy_migration_locked",
        "credit",
        summary="external:legacy_migration → user locked (hold = reference_id)",
        counterparty=_LEGACY,
        credit_bucket="locked",
    ),
    _spec(
        "legacy_migration_savings",
        "credit",
        summary="external:legacy_migration → user savings",
        counterparty=_LEGACY,
        credit_bucket="savings",
    ),
    _spec("legacy_unlock", "unlock", summary="a legacy hold → user available"),
)

REGISTRY: Final[Mapping[str, TransactionTypeSpec]] = MappingProxyType(
    {spec.name: spec for spec in _SPECS}
)


def registered(transaction_type: str, command_type: str) -> TransactionTypeSpec | None:
    """The spec of a transaction type if it is registered for that command type, else None."""
    spec = REGISTRY.get(transaction_type)
    if spec is None or not spec.allows(command_type):
        return None
    return spec


def describe() -> str:
    """The registry as a Markdown table: for the AsyncAPI document and the docs."""
    lines = ["| transaction_type | command types | money from / to |", "|---|---|---|"]
    lines += [
        f"| {spec.name} | {', '.join(sorted(spec.command_types))} | {spec.summary} |"
        for spec in _SPECS
    ]
    return "\n".join(lines)
