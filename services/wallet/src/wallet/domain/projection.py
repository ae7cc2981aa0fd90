"""Read-model rows derived from an outcome: pure, so that replay rebuilds exactly what live did."""

from __future__ import annotations

from decimal import Decimal

from shared.money import LEDGER_CONTEXT, negate
from wallet.domain.accounts import Bucket, parse_user_account
from wallet.domain.ledger import ZERO, WalletKey
from wallet.domain.records import HistoryRow, Outcome

# Command types whose single row is named after the command itself.
_NAMED_DIRECTIONS = frozenset({"lock", "unlock", "savings_in", "savings_out"})


def _bucket_deltas(outcome: Outcome) -> dict[WalletKey, dict[Bucket, Decimal]]:
    deltas: dict[WalletKey, dict[Bucket, Decimal]] = {}
    for entry in outcome.entries:
        owner = parse_user_account(entry.account)
        if owner is None:
            continue
        user_id, bucket = owner
        buckets = deltas.setdefault((user_id, entry.currency), {})
        buckets[bucket] = LEDGER_CONTEXT.add(buckets.get(bucket, ZERO), entry.amount)
    return deltas


def _direction(command_type: str, buckets: dict[Bucket, Decimal]) -> tuple[str, Decimal]:
    if command_type in _NAMED_DIRECTIONS:
        return command_type, max(abs(v) for v in buckets.values())
    locked = buckets.get("locked", ZERO)
    if locked < 0:
        return "release", negate(locked)
    # Whatever bucket it lands in (a deposit in available, interest in savings, a migrated
    # locked balance in locked), money that arrives is a credit of what arrived.
    net = ZERO
    for delta in buckets.values():
        net = LEDGER_CONTEXT.add(net, delta)
    return ("credit", net) if net > 0 else ("debit", negate(net))


def history_rows(outcome: Outcome) -> tuple[HistoryRow, ...]:
    """One row per user and currency an applied outcome touched; none for a rejection."""
    if outcome.status != "applied":
        return ()
    after = {(b.user_id, b.currency): b.balances for b in outcome.balances_after}
    command = outcome.command
    rows = []
    for index, ((user_id, currency), buckets) in enumerate(_bucket_deltas(outcome).items()):
        direction, amount = _direction(command.type, buckets)
        balances = after[(user_id, currency)]
        rows.append(
            HistoryRow(
                transaction_id=f"{outcome.transaction_id}:{index}",
                ledger_transaction_id=outcome.transaction_id,
                user_id=user_id,
                currency=currency,
                amount=amount,
                transaction_type=command.transaction_type,
                direction=direction,
                reference_id=command.reference_id,
                balance_after=balances.available,
                locked_balance_after=balances.locked,
                savings_balance_after=balances.savings,
                metadata=command.metadata,
                timestamp=outcome.recorded_at,
            )
        )
    return tuple(rows)
