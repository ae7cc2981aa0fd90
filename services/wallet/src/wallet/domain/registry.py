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

    counterparty: the account a credit takes its money from, or a debit / release pays into;
    None where money only moves between users and their own buckets (or platform:liquidity for an
    exchange, which every exchange names itself).
    credit_bucket: the user bucket a credit lands in; None for a credit that changes no user
    wallet (credit_account then names the platform account that receives it).
    """

    name: str
    command_types: frozenset[str]
    counterparty: str | None = None
    credit_bucket: Bucket | None = "available"
    credit_account: str | None = None

    def allows(self, command_type: str) -> bool:
        return command_type in self.command_types


def _spec(
    name: str,
    *command_types: str,
    counterparty: str | None = None,
    credit_bucket: Bucket | None = "available",
    credit_account: str | None = None,
) -> TransactionTypeSpec:
    return TransactionTypeSpec(
        name, frozenset(command_types), counterparty, credit_bucket, credit_account
    )


WITHDRAWALS: Final = external_account("withdrawals")

_SPECS: Final = (
    # Money entering the ledger.
    _spec("deposit_nowpayments", "credit", counterparty=external_account("nowpayments")),
    _spec("deposit_bank_transfer", "credit", counterparty=external_account("bank")),
    # Money leaving it: the seed's direct debit, and the gateway's lock → release / unlock.
    _spec("withdrawal", "debit", "release_locked", counterparty=WITHDRAWALS),
    _spec("withdrawal_lock", "lock"),
    _spec("withdrawal_unlock", "unlock"),
    _spec("withdrawal_release", "release_locked", counterparty=WITHDRAWALS),
    # P2P: escrow, cancel, completion (locked → buyer, or released out as the seed did), payment.
    _spec("p2p_escrow", "lock"),
    _spec("p2p_cancelled", "unlock"),
    _spec("p2p_completed", "transfer_locked", "release_locked", counterparty=WITHDRAWALS),
    _spec("p2p_payment", "transfer"),
    # Trading against the platform's inventory, and between users.
    _spec("swap", "exchange", counterparty=PLATFORM_LIQUIDITY),
    _spec("express_buy", "exchange", counterparty=PLATFORM_LIQUIDITY),
    _spec("spot_order", "lock", "unlock"),
    _spec("spot_trade", "settle_trade"),
    # Savings.
    _spec("savings_deposit", "savings_in"),
    _spec("savings_withdrawal", "savings_out"),
    _spec("savings_interest", "credit", counterparty=PLATFORM_INTEREST, credit_bucket="savings"),
    # Platform moves: commissions come out of collected fees, never minted; funding of the
    # exchange's inventory comes from the treasury and touches no user wallet.
    _spec("referral_commission", "credit", counterparty=PLATFORM_FEES),
    _spec(
        "liquidity_funding",
        "credit",
        counterparty=external_account("treasury"),
        credit_bucket=None,
        credit_account=PLATFORM_LIQUIDITY,
    ),
    # Balances carried over from the legacy system, and the release of legacy holds.
    _spec("legacy_migration", "credit", counterparty=external_account("legacy_migration")),
    _spec(
        "legacy_migration_locked",
        "credit",
        counterparty=external_account("legacy_migration"),
        credit_bucket="locked",
    ),
    _spec(
        "legacy_migration_savings",
        "credit",
        counterparty=external_account("legacy_migration"),
        credit_bucket="savings",
    ),
    _spec("legacy_unlock", "unlock"),
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
