"""MongoDB document shapes of the ledger, and the only place where Decimal meets Decimal128.

Pure conversions, no I/O: the store sends and reads these documents. Amounts are Decimal128 in the
database and Decimal in code, exact both ways: Decimal128 refuses (raises Inexact) instead of
rounding a value with more than 34 digits, and the currency registry keeps amounts well inside that.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from bson import Decimal128, ObjectId

from shared.messaging.commands import WALLET_COMMAND, WalletCommand
from wallet.domain.ledger import Balances, Entry, WalletKey
from wallet.domain.migration import read_amount
from wallet.domain.records import (
    BalanceAfter,
    HistoryRow,
    IdempotencyKey,
    LegacyWallet,
    Outcome,
    WalletRecord,
)

Document = dict[str, Any]

# Outcomes, rejections included: the event store. Named apart from the `wallet.events` topic,
# which carries applied transactions only; stores created before were named LEGACY_OUTCOMES and
# are renamed on start (MongoLedgerStore.ensure_indexes).
OUTCOMES: Final = "ledger_outcomes"
LEGACY_OUTCOMES: Final = "wallet_events"
WALLETS: Final = "wallets"
HISTORY: Final = "wallet_transactions"
ACCOUNTS: Final = "ledger_accounts"


def to_d128(value: Decimal) -> Decimal128:
    return Decimal128(value)


def from_d128(value: Decimal128) -> Decimal:
    return value.to_decimal()


# Idempotency key -----------------------------------------------------------------------------

_KEY_FIELDS: Final = ("type", "transaction_type", "reference_id")


def key_document(key: IdempotencyKey) -> Document:
    return dict(zip(_KEY_FIELDS, key, strict=True))


def key_filter(key: IdempotencyKey) -> Document:
    """Equality on the dotted fields, so that the compound unique index answers it."""
    return {f"key.{name}": value for name, value in zip(_KEY_FIELDS, key, strict=True)}


def key_of(document: Document) -> IdempotencyKey:
    key = document["key"]
    return (key["type"], key["transaction_type"], key["reference_id"])


# Commands ------------------------------------------------------------------------------------


def command_document(command: WalletCommand) -> Document:
    """The command as JSON would carry it, except that its amounts are Decimal128, not strings."""
    document: Document = command.model_dump(mode="json")
    for name in type(command).model_fields:
        value = getattr(command, name)
        if isinstance(value, Decimal):
            document[name] = to_d128(value)
    return document


def command_of(document: Document) -> WalletCommand:
    fields = {k: from_d128(v) if isinstance(v, Decimal128) else v for k, v in document.items()}
    return WALLET_COMMAND.validate_python(fields)


# Outcomes (ledger_outcomes) ------------------------------------------------------------------


def _balances_document(after: BalanceAfter) -> Document:
    document = {
        "user_id": after.user_id,
        "currency": after.currency,
        "available_balance": to_d128(after.balances.available),
        "locked_balance": to_d128(after.balances.locked),
        "savings_balance": to_d128(after.balances.savings),
    }
    if after.version is not None:
        document["version"] = after.version
    return document


def _balances_of(document: Document) -> Balances:
    return Balances(
        available=from_d128(document["available_balance"]),
        locked=from_d128(document["locked_balance"]),
        savings=from_d128(document["savings_balance"]),
    )


def outcome_document(outcome: Outcome, batch: ObjectId, position: int) -> Document:
    """One event. (recorded_at, batch, position) orders events as they were committed, for replay:
    a batch shares one recorded_at, and ObjectIds made by one process increase."""
    return {
        "_id": outcome.transaction_id,
        "key": key_document(outcome.key),
        "fingerprint": outcome.fingerprint,
        "status": outcome.status,
        "reason": outcome.reason,
        "detail": outcome.detail,
        "command": command_document(outcome.command),
        "entries": [
            {"account": e.account, "currency": e.currency, "amount": to_d128(e.amount)}
            for e in outcome.entries
        ],
        "balances_after": [_balances_document(b) for b in outcome.balances_after],
        "recorded_at": outcome.recorded_at,
        "batch": batch,
        "position": position,
    }


def outcome_of(document: Document) -> Outcome:
    return Outcome(
        key=key_of(document),
        fingerprint=document["fingerprint"],
        command=command_of(document["command"]),
        status=document["status"],
        transaction_id=document["_id"],
        recorded_at=document["recorded_at"],
        entries=tuple(
            Entry(e["account"], e["currency"], from_d128(e["amount"])) for e in document["entries"]
        ),
        balances_after=tuple(
            BalanceAfter(b["user_id"], b["currency"], _balances_of(b), b.get("version"))
            for b in document["balances_after"]
        ),
        reason=document.get("reason"),
        detail=document.get("detail"),
    )


# Wallets -------------------------------------------------------------------------------------


def wallet_filter(key: WalletKey) -> Document:
    return {"user_id": key[0], "currency": key[1]}


def wallet_balances(record: WalletRecord) -> Document:
    """What an update sets: the seed's balance fields (total = available + locked), savings, the
    holds that make up the locked balance, version."""
    balances = record.balances
    return {
        "available_balance": to_d128(balances.available),
        "locked_balance": to_d128(balances.locked),
        "total_balance": to_d128(balances.total),
        "savings_balance": to_d128(balances.savings),
        # An array, not a subdocument keyed by reference: a reference may hold '.' or '$'.
        "holds": [{"reference_id": r, "amount": to_d128(a)} for r, a in record.holds],
        "version": record.version,
        "last_updated": record.last_updated,
    }


def wallet_document(record: WalletRecord) -> Document:
    return {**wallet_filter(record.key), **wallet_balances(record), "created_at": record.created_at}


# Wallets the ledger writes carry a version; a document in the seed's old shape (float balances, no
# ledger fields) does not. Queries keep the two apart so a legacy document never breaks a read.
LEDGER_WALLET: Final[Document] = {"version": {"$exists": True}}
LEGACY_WALLET: Final[Document] = {"version": {"$exists": False}}


def is_ledger_wallet(document: Document) -> bool:
    return isinstance(document.get("version"), int)


# Every amount field a legacy document may have (savings_balance as migrating `wallets` in place
# maps it): a document holding money in any of them is listed by verify and kept by replay.
_LEGACY_AMOUNTS: Final = ("available_balance", "locked_balance", "savings_balance", "total_balance")


def legacy_wallet_of(document: Document) -> LegacyWallet:
    """What a legacy document says, as text: never decoded as ledger state. Its amounts are read
    as `wallet migrate` reads them only to tell whether it holds any money."""
    amounts = [document.get(name) for name in _LEGACY_AMOUNTS]
    amounts = [from_d128(v) if isinstance(v, Decimal128) else v for v in amounts]
    return LegacyWallet(
        user_id=str(document.get("user_id")),
        currency=str(document.get("currency")),
        fields={name: str(document.get(name)) for name in _LEGACY_AMOUNTS if name in document},
        holds_money=any(value is not None and read_amount(value) != 0 for value in amounts),
    )


def wallet_of(document: Document) -> WalletRecord:
    return WalletRecord(
        user_id=document["user_id"],
        currency=document["currency"],
        balances=_balances_of(document),
        version=document["version"],
        created_at=document["created_at"],
        last_updated=document["last_updated"],
        holds=tuple((h["reference_id"], from_d128(h["amount"])) for h in document.get("holds", ())),
        stored_total=from_d128(document["total_balance"]),
    )


# History (wallet_transactions) ---------------------------------------------------------------

# Rows the ledger writes carry the ledger transaction they belong to; the seed's own rows (float
# amounts, no ledger fields) do not. They are not the ledger's history: reads leave them out and a
# swap of the projections keeps them as they are.
LEDGER_ROW: Final[Document] = {"ledger_transaction_id": {"$exists": True}}
SEED_ROW: Final[Document] = {"ledger_transaction_id": {"$exists": False}}


def is_ledger_row(document: Document) -> bool:
    return "ledger_transaction_id" in document


def history_document(row: HistoryRow) -> Document:
    return {
        "transaction_id": row.transaction_id,
        "ledger_transaction_id": row.ledger_transaction_id,
        "user_id": row.user_id,
        "currency": row.currency,
        "amount": to_d128(row.amount),
        "transaction_type": row.transaction_type,
        "direction": row.direction,
        "reference_id": row.reference_id,
        "balance_after": to_d128(row.balance_after),
        "locked_balance_after": to_d128(row.locked_balance_after),
        "savings_balance_after": to_d128(row.savings_balance_after),
        "metadata": row.metadata,
        "timestamp": row.timestamp,
    }


def history_of(document: Document) -> HistoryRow:
    return HistoryRow(
        transaction_id=document["transaction_id"],
        ledger_transaction_id=document["ledger_transaction_id"],
        user_id=document["user_id"],
        currency=document["currency"],
        amount=from_d128(document["amount"]),
        transaction_type=document["transaction_type"],
        direction=document["direction"],
        reference_id=document["reference_id"],
        balance_after=from_d128(document["balance_after"]),
        locked_balance_after=from_d128(document["locked_balance_after"]),
        savings_balance_after=from_d128(document["savings_balance_after"]),
        metadata=document["metadata"],
        timestamp=document["timestamp"],
    )


def history_filter(
    user_id: str,
    currency: str | None,
    before: tuple[datetime, str] | None,
    reference_id: str | None = None,
) -> Document:
    """The ledger's rows of a user (and currency, and reference) strictly older than the cursor in
    (timestamp, transaction_id)."""
    query: Document = {"user_id": user_id, **LEDGER_ROW}
    if currency is not None:
        query["currency"] = currency
    if reference_id is not None:
        query["reference_id"] = reference_id
    if before is not None:
        timestamp, transaction_id = before
        query["$or"] = [
            {"timestamp": {"$lt": timestamp}},
            {"timestamp": timestamp, "transaction_id": {"$lt": transaction_id}},
        ]
    return query


# Platform and external accounts (ledger_accounts) --------------------------------------------


def account_filter(key: tuple[str, str]) -> Document:
    return {"account": key[0], "currency": key[1]}


def account_document(key: tuple[str, str], balance: Decimal) -> Document:
    return {**account_filter(key), "balance": to_d128(balance)}
