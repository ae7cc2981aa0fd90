"""Commissions: which fee a ledger transaction charged to whom, and the referrer's share of it.

A fee is a positive posting to `platform:fees`. Who paid it:
- settle_trade (a spot fill): each side pays the fee in the currency it receives, so a fee in the
  currency credited to the seller's (`to_user`) available balance (the quote) is the seller's, and
  one in the currency credited to the buyer's (`user_id`) (the base) is the buyer's;
- every other command (exchange, release_locked, transfer_locked, ...): the command's payer,
  `user_id` (for a P2P release that is the seller, who pays the P2P fee).

The referrer of a bound payer earns floor(fee × rate) to the currency's scale, paid once per
(source transaction, fee currency): that pair is the wallet reference of the payout. Only fees of
transactions that occurred at or after the binding count, so rebuilding from the start of
`wallet.events` never pays for what an invitee did before they were bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Final

from pydantic import JsonValue

from shared.messaging import LedgerTransaction
from shared.money import Currency, add, format_amount, get_currency
from trading.referrals.domain.bindings import Binding
from trading.rounding import floor_to_scale

FEES_ACCOUNT: Final = "platform:fees"
COMMISSION_TRANSACTION_TYPE: Final = "referral_commission"
REFERENCE_PREFIX: Final = "referral:"
ZERO: Final = Decimal(0)


def commission_amount(fee: Decimal, rate: Decimal, currency: Currency) -> Decimal:
    """floor(fee × rate) to the currency's scale (what the referrer receives is rounded down)."""
    if fee <= 0 or rate <= 0:
        return ZERO
    return floor_to_scale(Fraction(fee) * Fraction(rate), currency)


def commission_reference(source_transaction_id: str, currency: str) -> str:
    return f"{REFERENCE_PREFIX}{source_transaction_id}:{currency}"


@dataclass(frozen=True, slots=True)
class FeeCharge:
    payer_id: str
    currency: str
    fee: Decimal


def _receiver_of(transaction: LedgerTransaction, currency: str) -> str:
    parties = [transaction.user_id] + ([transaction.to_user] if transaction.to_user else [])
    for party in parties:
        account = f"user:{party}:available"
        if any(
            p.account == account and p.currency == currency and p.amount > 0
            for p in transaction.postings
        ):
            return party
    return transaction.user_id


def fees_charged(transaction: LedgerTransaction) -> list[FeeCharge]:
    """Every fee the transaction put into platform:fees, per currency, with who paid it."""
    fees: dict[str, Decimal] = {}
    for posting in transaction.postings:
        if posting.account == FEES_ACCOUNT and posting.amount > 0:
            fees[posting.currency] = add(fees.get(posting.currency, ZERO), posting.amount)
    charges = []
    for currency in sorted(fees):
        payer = (
            _receiver_of(transaction, currency)
            if transaction.type == "settle_trade"
            else transaction.user_id
        )
        charges.append(FeeCharge(payer_id=payer, currency=currency, fee=fees[currency]))
    return charges


@dataclass(frozen=True, slots=True)
class CommissionDue:
    reference_id: str
    referrer_id: str
    referred_user_id: str
    currency: str
    amount: Decimal
    fee: Decimal
    rate: Decimal
    source_transaction_id: str
    source_transaction_type: str
    source_occurred_at: datetime

    def metadata(self) -> dict[str, JsonValue]:
        """What the contract asks the payout to carry."""
        return {
            "referred_user_id": self.referred_user_id,
            "source_transaction_id": self.source_transaction_id,
            "source_transaction_type": self.source_transaction_type,
            "fee": format_amount(self.fee),
            "rate": format_amount(self.rate),
        }


def commissions_due(
    transaction: LedgerTransaction,
    binding_of: Callable[[str], Binding | None],
    rate: Decimal,
) -> list[CommissionDue]:
    """The payouts a transaction owes referrers (none for dust below one unit of the currency)."""
    if transaction.transaction_type == COMMISSION_TRANSACTION_TYPE:
        return []  # a payout takes from platform:fees; it never charges a fee itself
    due = []
    for charge in fees_charged(transaction):
        binding = binding_of(charge.payer_id)
        if binding is None or transaction.occurred_at < binding.bound_at:
            continue
        amount = commission_amount(charge.fee, rate, get_currency(charge.currency))
        if amount <= 0:
            continue
        due.append(
            CommissionDue(
                reference_id=commission_reference(transaction.transaction_id, charge.currency),
                referrer_id=binding.referrer_id,
                referred_user_id=charge.payer_id,
                currency=charge.currency,
                amount=amount,
                fee=charge.fee,
                rate=rate,
                source_transaction_id=transaction.transaction_id,
                source_transaction_type=transaction.transaction_type,
                source_occurred_at=transaction.occurred_at,
            )
        )
    return due
