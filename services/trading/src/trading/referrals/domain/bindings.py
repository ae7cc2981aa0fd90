"""Binding an invitee to the referrer who invited them: once per invitee, never to oneself.

"Once" is enforced where bindings are stored (the invitee's id is the record's key, so two
racing binds store one); this module checks what can be checked without storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.messaging.commands import is_identifier
from trading.referrals.domain.errors import AlreadyBound, ReferralRefused


@dataclass(frozen=True, slots=True)
class Binding:
    invitee_id: str
    referrer_id: str
    # Fees count from this instant on (see commissions.commissions_due). It is taken once the
    # binding is stored and visible (see the referral storage), never before: a fee read while
    # the binding was not there yet must have occurred before `bound_at`.
    bound_at: datetime


def check_binding(invitee_id: str, referrer_id: object) -> str:
    """The referrer id to bind `invitee_id` to, or ReferralRefused (400)."""
    # What a wallet command's user id can be (UTF-8 text included): what can be bound can be paid.
    if not is_identifier(referrer_id):
        raise ReferralRefused(
            "invalid_referrer", "referrer_id must be a user id (1-200 characters, no spaces)"
        )
    if referrer_id == invitee_id:
        raise ReferralRefused("self_referral", "a user cannot be their own referrer")
    return referrer_id


def already_bound(binding: Binding) -> AlreadyBound:
    return AlreadyBound("already_bound", f"already bound to referrer {binding.referrer_id}")
