"""The HTTP shapes of the gateway's records (amounts as decimal strings, times in ISO 8601)."""

from __future__ import annotations

from typing import Any

from ipn_gateway.application.records import ReviewItem, Withdrawal
from shared.money import format_amount


def withdrawal_view(withdrawal: Withdrawal) -> dict[str, Any]:
    """The contract's shape of a withdrawal."""
    return {
        "withdrawal_id": withdrawal.withdrawal_id,
        "user_id": withdrawal.user_id,
        "currency": withdrawal.currency,
        "amount": format_amount(withdrawal.amount),
        "fee": format_amount(withdrawal.fee),
        "address": withdrawal.address,
        "status": withdrawal.status.value,
        "reason": withdrawal.reason,
        "decision": withdrawal.decision,
        "decided_by": withdrawal.decided_by,
        "created_at": withdrawal.created_at.isoformat(),
        "updated_at": withdrawal.updated_at.isoformat(),
    }


def review_view(item: ReviewItem) -> dict[str, Any]:
    return {
        "review_id": item.review_id,
        "reason": item.reason,
        "detail": item.detail,
        "order_id": item.order_id,
        "payment_id": item.payment_id,
        "payment_status": item.payment_status,
        "user_id": item.user_id,
        "currency": item.currency,
        "amount": format_amount(item.cumulative) if item.cumulative is not None else None,
        "status": item.status,
        "created_at": item.created_at.isoformat(),
        "decided_by": item.decided_by,
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
        "note": item.note,
    }
