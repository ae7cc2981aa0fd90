"""The outgoing messages of a batch: one result per command delivered, one event per applied
ledger transaction.

They are built as model_construct builds them (`assemble`): every value comes from a command that
was validated on the way in or from ledger arithmetic on those, and validating it all again was a
fifth of the time a batch takes. Serialisation is the same (the serialisers run on dump).
"""

from __future__ import annotations

from datetime import datetime

from shared.messaging import (
    BalanceSnapshot,
    CommandResult,
    LedgerTransaction,
    Posting,
    ResultStatus,
    SettleTradeCommand,
    TransferCommand,
    TransferLockedCommand,
    WalletCommand,
)
from shared.messaging.outcomes import assemble
from wallet.domain.records import BalanceAfter, Outcome


def snapshot(after: BalanceAfter) -> BalanceSnapshot:
    balances = after.balances
    # Every field, in declaration order (what `assemble` needs).
    return assemble(
        BalanceSnapshot,
        {
            "user_id": after.user_id,
            "currency": after.currency,
            "available_balance": balances.available,
            "locked_balance": balances.locked,
            "savings_balance": balances.savings,
            "total_balance": balances.total,
        },
    )


def command_result(
    command: WalletCommand,
    status: ResultStatus,
    *,
    now: datetime,
    outcome: Outcome | None = None,
    reason: str | None = None,
    detail: str | None = None,
) -> tuple[str, CommandResult]:
    """The result of one delivery, with its Kafka key (the payer)."""
    result = assemble(
        CommandResult,
        {
            "command_id": command.command_id,
            "type": command.type,
            "transaction_type": command.transaction_type,
            "reference_id": command.reference_id,
            "user_id": command.user_id,
            "status": status,
            "reason": reason if reason is not None else (outcome.reason if outcome else None),
            "detail": detail if detail is not None else (outcome.detail if outcome else None),
            "original_status": outcome.status if outcome and status == "duplicate" else None,
            "transaction_id": (
                outcome.transaction_id if outcome and outcome.status == "applied" else None
            ),
            "balances": [snapshot(b) for b in (outcome.balances_after if outcome else ())],
            "processed_at": now,
        },
    )
    return command.user_id, result


# A tuple built once: `A | B | C` in the call would build a union object per event.
_WITH_TO_USER = (TransferCommand, TransferLockedCommand, SettleTradeCommand)


def ledger_event(outcome: Outcome) -> LedgerTransaction:
    command = outcome.command
    # isinstance, not getattr with a default: a pydantic model's missing attribute is an
    # exception built with a message, which cost a tenth of a batch.
    to_user = command.to_user if isinstance(command, _WITH_TO_USER) else None
    return assemble(
        LedgerTransaction,
        {
            "transaction_id": outcome.transaction_id,
            "command_id": command.command_id,
            "type": command.type,
            "transaction_type": command.transaction_type,
            "reference_id": command.reference_id,
            "user_id": command.user_id,
            "to_user": to_user,
            "postings": [
                assemble(
                    Posting, {"account": e.account, "currency": e.currency, "amount": e.amount}
                )
                for e in outcome.entries
            ],
            "metadata": command.metadata,
            "occurred_at": outcome.recorded_at,
        },
    )
