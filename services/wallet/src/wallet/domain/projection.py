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
        largest: Decimal | None = None
        for delta in buckets.values():
            size = delta if delta >= 0 else negate(delta)  # abs() rounds at 28 digits
            if largest is None or size > largest:
                largest = size
        assert largest is not None  # a wallet in the deltas has a bucket
        return command_type, largest
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
    deltas = _bucket_deltas(outcome)
    if not deltas:
        return ()
    after = {(b.user_id, b.currency): b.balances for b in outcome.balances_after}
    command = outcome.command
    command_type = command.type
    transaction_type = command.transaction_type
    reference_id = command.reference_id
    metadata = command.metadata
    transaction_id = outcome.transaction_id
    recorded_at = outcome.recorded_at
    rows = []
    for index, ((user_id, currency), buckets) in enumerate(deltas.items()):
        direction, amount = _direction(command_type, buckets)
        balances = after[(user_id, currency)]
        rows.append(
            HistoryRow(
                f"{transaction_id}:{index}",
                transaction_id,
                user_id,
                currency,
                amount,
                transaction_type,
                direction,
                reference_id,
                balances.available,
                balances.locked,
                balances.savings,
                metadata,
                recorded_at,
            )
        )
    return tuple(rows)
