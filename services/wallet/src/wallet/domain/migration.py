"""Migration of legacy balances: pure rules from legacy documents to opening transactions.

A legacy collection maps a document to a user, a currency and up to three buckets (available,
locked, savings). Each (collection, document, bucket) with a non-zero amount becomes one opening
credit from `external:legacy_migration` whose reference is `legacy:<collection>:<_id>`: the same
document always gives the same commands, so running the migration again changes nothing. A locked
amount is credited into the locked bucket under the hold of that same name. Two documents whose
`_id`s read the same (the number 1 and the string "1", an ObjectId and its hex string) would share
that reference, so the ledger would take the second's credits for the first's: the second is
invalid (`ambiguous_document_id`).

Amounts are read exactly: a float as the shortest decimal that round-trips (what a person sees),
strings and Decimal128 as written. More decimals than the currency holds are rounded half-even to
its scale and listed, never dropped silently, with the exact difference (an amount may have more
significant digits than the ledger's arithmetic holds). A row that cannot be read is invalid: it
blocks the migration unless the operator chooses to skip it.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, Inexact
from typing import Any, Final, Literal

from shared.messaging.commands import IDENTIFIER_MAX_LENGTH, is_identifier
from shared.money import (
    LEDGER_CONTEXT,
    Currency,
    MoneyError,
    add,
    format_amount,
    get_currency,
    is_decimal_text,
    max_integer_digits,
)

MigrationBucket = Literal["available", "locked", "savings"]
MIGRATION_BUCKETS: Final[tuple[MigrationBucket, ...]] = ("available", "locked", "savings")
ZERO: Final = Decimal(0)

# The registered transaction types of opening balances, one per bucket (the wallet's registry).
OPENING_TRANSACTION_TYPES: Final[dict[MigrationBucket, str]] = {
    "available": "legacy_migration",
    "locked": "legacy_migration_locked",
    "savings": "legacy_migration_savings",
}
LEGACY_UNLOCK_TRANSACTION_TYPE: Final = "legacy_unlock"
REFERENCE_PREFIX: Final = "legacy:"
# The ledger's context traps Inexact; here rounding to the scale is the listed, intended step.
_ROUNDING_CONTEXT: Final = LEDGER_CONTEXT.copy()
_ROUNDING_CONTEXT.traps[Inexact] = False
# A legacy string may have more significant digits (64 characters) than the ledger's 60, and its
# difference with the rounded amount as many: subtracting in this context is always exact (a sum
# only ever holds the digits its operands span), and Inexact still traps.
_EXACT_CONTEXT: Final = LEDGER_CONTEXT.copy()
_EXACT_CONTEXT.prec = decimal.MAX_PREC


class MappingError(ValueError):
    """The mapping file does not say how to read a collection."""


@dataclass(frozen=True, slots=True)
class CollectionMapping:
    """How one legacy collection names its fields (the TOML's `[[collection]]`)."""

    name: str
    user_field: str
    currency_field: str
    available_field: str | None = None
    locked_field: str | None = None
    savings_field: str | None = None

    def field_of(self, bucket: MigrationBucket) -> str | None:
        return {
            "available": self.available_field,
            "locked": self.locked_field,
            "savings": self.savings_field,
        }[bucket]


def parse_mapping(document: Mapping[str, Any]) -> tuple[CollectionMapping, ...]:
    """The collections of a parsed TOML mapping, checked: names unique, every field a string."""
    unknown_tables = sorted(set(document) - {"collection"})
    if unknown_tables:
        # A misspelt `[[collection]]` would leave its collection out without a word.
        raise MappingError(f"unknown keys {', '.join(unknown_tables)} (only [[collection]])")
    entries = document.get("collection")
    if not isinstance(entries, list) or not entries:
        raise MappingError("the mapping lists no [[collection]]")
    known = {
        "name",
        "user_field",
        "currency_field",
        "available_field",
        "locked_field",
        "savings_field",
    }
    mappings: list[CollectionMapping] = []
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise MappingError(f"collection #{index} is not a table")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise MappingError(f"collection #{index}: unknown keys {', '.join(unknown)}")
        for key, value in entry.items():
            if not isinstance(value, str) or not value:
                raise MappingError(f"collection #{index}: {key} must be a non-empty string")
        for required in ("name", "user_field", "currency_field"):
            if required not in entry:
                raise MappingError(f"collection #{index}: {required} is missing")
        fields = [value for key, value in entry.items() if key != "name"]
        repeated = sorted({f for f in fields if fields.count(f) > 1})
        if repeated:
            # One amount read into two buckets would be credited twice.
            raise MappingError(f"collection #{index}: field {', '.join(repeated)} named twice")
        mapping = CollectionMapping(**entry)
        if not is_identifier(opening_reference(mapping.name, "0")):
            # Its name is part of every opening credit's reference, which no space may be in.
            raise MappingError(
                f"collection #{index}: name {mapping.name!r} cannot be in a reference"
            )
        if not any(mapping.field_of(b) for b in MIGRATION_BUCKETS):
            raise MappingError(
                f"collection {mapping.name}: give at least one of available_field, locked_field,"
                " savings_field"
            )
        mappings.append(mapping)
    names = [m.name for m in mappings]
    if len(set(names)) != len(names):
        raise MappingError("a collection is listed twice")
    return tuple(mappings)


@dataclass(frozen=True, slots=True)
class InvalidRow:
    collection: str
    document_id: str
    user_id: str | None
    currency: str | None
    field: str
    original: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RoundedAmount:
    collection: str
    document_id: str
    user_id: str
    currency: str
    field: str
    original: str
    migrated: Decimal

    @property
    def difference(self) -> Decimal:
        # What the migration added to (or, when negative, took from) the legacy value.
        return _EXACT_CONTEXT.subtract(self.migrated, Decimal(self.original))


def exact_text(value: Decimal) -> str:
    """Plain decimal text of a value, every digit kept: `format_amount` normalises in the ledger's
    60 digits, which a rounding's difference may exceed."""
    if value == 0:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True, slots=True)
class OpeningLine:
    """One opening transaction: `amount` of `currency` credited to one bucket of `user_id`."""

    collection: str
    document_id: str
    user_id: str
    currency: str
    bucket: MigrationBucket
    amount: Decimal

    @property
    def reference_id(self) -> str:
        return opening_reference(self.collection, self.document_id)

    @property
    def transaction_type(self) -> str:
        return OPENING_TRANSACTION_TYPES[self.bucket]

    @property
    def idempotency_key(self) -> tuple[str, str, str]:
        """The key its credit is recorded under: what tells a later run it was brought in."""
        return ("credit", self.transaction_type, self.reference_id)


def opening_reference(collection: str, document_id: str) -> str:
    """`legacy:<collection>:<_id>`: the credit's reference and, for a locked amount, its hold."""
    return f"{REFERENCE_PREFIX}{collection}:{document_id}"


@dataclass(frozen=True, slots=True)
class ReadDocument:
    """What one legacy document comes to: lines to credit, or why it cannot be migrated."""

    lines: tuple[OpeningLine, ...] = ()
    rounded: tuple[RoundedAmount, ...] = ()
    invalid: tuple[InvalidRow, ...] = ()
    # How the document is listed when another one's credits are (or would be) under its reference;
    # None when its `_id` is unusable (it is listed for that).
    ambiguous: InvalidRow | None = None

    @property
    def reference_id(self) -> str | None:
        """The reference of the document's credits, valid or not; None for an unusable `_id`."""
        row = self.ambiguous
        return None if row is None else opening_reference(row.collection, row.document_id)


def original_text(value: object) -> str | None:
    """The stored value as text: a float as its shortest round-trip form, None for a missing one."""
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_amount(value: object) -> Decimal | None:
    """The exact decimal a stored value means, or None when it cannot be read as an amount.

    A float is read as the shortest decimal that round-trips (0.1 is 0.1, not
    0.1000000000000000055…); bools are refused (they are ints to Python, never money).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64 or not is_decimal_text(text):
            return None  # `1_000.5` or `１.５` is what someone typed by hand: listed, never guessed
        number = Decimal(text)
    else:
        return None
    if not number.is_finite():
        return None
    return number


def document_id_text(raw: object) -> str | None:
    """The document's `_id` as a stable identifier (an ObjectId as its hex), None if unusable."""
    text = str(raw) if raw is not None else ""
    return text if is_identifier(text) else None


# Integers a float holds exactly: a user id stored as a double (as JavaScript and older shells
# write numbers) is the integer it spells; past this a double may spell another one.
_EXACT_FLOAT_INTEGER: Final = 2**53


def _integer_of(raw: float | Decimal) -> int | None:
    if isinstance(raw, float):
        exact = math.isfinite(raw) and raw.is_integer() and abs(raw) <= _EXACT_FLOAT_INTEGER
        return int(raw) if exact else None
    if not raw.is_finite() or raw.adjusted() >= IDENTIFIER_MAX_LENGTH:
        return None  # no id: more digits than an id holds (or so many int() would refuse them)
    return int(raw) if raw == raw.to_integral_value() else None


def _user_text(raw: object) -> str | None:
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, float | Decimal):
        raw = _integer_of(raw)
    if isinstance(raw, str | int):
        text = str(raw)
        if is_identifier(text):  # what a wallet command carries (no space, no control character)
            return text
    return None


def field_value(document: Mapping[str, Any], path: str) -> object:
    """A field by name, or by dotted path into embedded documents (`balances.available`)."""
    if path in document:
        return document[path]
    value: object = document
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def read_document(mapping: CollectionMapping, document: Mapping[str, Any]) -> ReadDocument:
    """The opening lines of one legacy document, with its roundings or why it is invalid."""
    document_id = document_id_text(document.get("_id"))
    invalid: list[InvalidRow] = []
    raw_user = field_value(document, mapping.user_field)
    user_id = _user_text(raw_user)
    raw_currency = field_value(document, mapping.currency_field)
    currency: Currency | None = None
    try:
        currency = get_currency(raw_currency)
    except MoneyError:
        currency = None

    def row(field_name: str, original: object, reason: str) -> InvalidRow:
        return InvalidRow(
            mapping.name,
            document_id or original_text(document.get("_id")) or "",
            user_id,
            currency.code if currency else original_text(raw_currency),
            field_name,
            original_text(original),
            reason,
        )

    def refuse(field_name: str, original: object, reason: str) -> None:
        invalid.append(row(field_name, original, reason))

    if document_id is not None and not is_identifier(opening_reference(mapping.name, document_id)):
        # Too long for a reference once prefixed: the credit's command would refuse it.
        document_id = None
    if document_id is None:
        refuse("_id", document.get("_id"), "unusable_document_id")
    ambiguous = None
    if document_id is not None:
        ambiguous = row("_id", document.get("_id"), "ambiguous_document_id")
    if user_id is None:
        # Absent (or empty) is missing; present but no id a wallet command can carry (another
        # type, a fraction, a control character) is unusable: someone must read it.
        missing = raw_user is None or raw_user == ""
        refuse(mapping.user_field, raw_user, "missing_user_id" if missing else "unusable_user_id")
    if currency is None:
        refuse(mapping.currency_field, raw_currency, "unknown_currency")

    amounts: list[tuple[MigrationBucket, str, object, Decimal]] = []
    for bucket in MIGRATION_BUCKETS:
        field_name = mapping.field_of(bucket)
        if field_name is None:
            continue
        raw = field_value(document, field_name)
        if raw is None:
            continue  # a missing field or null counts as 0
        amount = read_amount(raw)
        if amount is None:
            refuse(field_name, raw, "unreadable_amount")
        elif amount < 0 or amount.is_signed():
            if amount != 0:
                refuse(field_name, raw, "negative_amount")
        elif amount != 0:
            amounts.append((bucket, field_name, raw, amount))

    if invalid or currency is None or user_id is None or document_id is None:
        return ReadDocument(invalid=tuple(invalid), ambiguous=ambiguous)

    lines: list[OpeningLine] = []
    rounded: list[RoundedAmount] = []
    for bucket, field_name, raw, amount in amounts:
        limit = max_integer_digits(currency)
        if amount.adjusted() >= limit:
            refuse(field_name, raw, "amount_too_large")
            continue
        migrated = amount.quantize(
            currency.quantum, rounding=ROUND_HALF_EVEN, context=_ROUNDING_CONTEXT
        )
        if migrated.adjusted() >= limit:
            refuse(field_name, raw, "amount_too_large")
            continue
        if migrated != amount:
            text = original_text(raw)
            assert text is not None
            rounded.append(
                RoundedAmount(
                    mapping.name, document_id, user_id, currency.code, field_name, text, migrated
                )
            )
        if migrated != 0:
            lines.append(
                OpeningLine(mapping.name, document_id, user_id, currency.code, bucket, migrated)
            )
    if invalid:
        return ReadDocument(invalid=tuple(invalid), ambiguous=ambiguous)
    return ReadDocument(tuple(lines), tuple(rounded), ambiguous=ambiguous)


# How the seed's own `wallets` documents name their fields: migrating `wallets` in place maps them
# so, and `wallet verify` reads a legacy copy the ledger kept in `wallets_legacy_snapshot` so.
SEED_WALLETS: Final = CollectionMapping(
    "wallets",
    "user_id",
    "currency",
    available_field="available_balance",
    locked_field="locked_balance",
    savings_field="savings_balance",
)


def not_brought_in(
    document: Mapping[str, Any], applied: Container[tuple[str, str, str]]
) -> list[str]:
    """What of a legacy `wallets` document is still to be migrated, given the idempotency keys of
    the applied ledger transactions: each bucket whose opening credit has not applied (`locked
    0.5`), or why the document cannot be migrated as it is (`available_balance
    unreadable_amount`); empty once every bucket is in, or when it holds nothing to migrate."""
    read = read_document(SEED_WALLETS, document)
    if read.invalid:
        return [f"{row.field} {row.reason}" for row in read.invalid]
    return [
        f"{line.bucket} {format_amount(line.amount)}"
        for line in read.lines
        if line.idempotency_key not in applied
    ]


BucketTotals = dict[MigrationBucket, Decimal]


def _empty_totals() -> BucketTotals:
    return dict.fromkeys(MIGRATION_BUCKETS, ZERO)


@dataclass(slots=True)
class Plan:
    """Everything a migration would write, and what it found on the way."""

    records: dict[str, int] = field(default_factory=dict)  # valid documents per collection
    lines: list[OpeningLine] = field(default_factory=list)
    rounded: list[RoundedAmount] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    references: set[str] = field(default_factory=set)  # of every document so far, valid or not

    def add(self, collection: str, read: ReadDocument) -> None:
        self.records.setdefault(collection, 0)
        invalid = read.invalid
        reference = read.reference_id
        if reference is not None and read.ambiguous is not None:
            if reference in self.references:
                # An earlier document's `_id` reads the same: the ledger would answer this one's
                # credits as duplicates of that one's (or refuse them), and its balance would
                # never come in. Listed instead, whether or not the earlier one is valid.
                invalid = (*invalid, read.ambiguous)
            self.references.add(reference)
        if invalid:
            self.invalid.extend(invalid)
            return
        self.records[collection] += 1
        self.lines.extend(read.lines)
        self.rounded.extend(read.rounded)

    @property
    def users(self) -> set[str]:
        return {line.user_id for line in self.lines}

    def expected(self) -> dict[tuple[str, str], BucketTotals]:
        """Per (user, currency) the balances the migration must produce."""
        expected: dict[tuple[str, str], BucketTotals] = {}
        for line in self.lines:
            totals = expected.setdefault((line.user_id, line.currency), _empty_totals())
            totals[line.bucket] = add(totals[line.bucket], line.amount)
        return expected

    def totals(self) -> dict[str, BucketTotals]:
        return totals_by_currency(self.expected())


def totals_by_currency(
    balances: Mapping[tuple[str, str], Mapping[MigrationBucket, Decimal]],
) -> dict[str, BucketTotals]:
    totals: dict[str, BucketTotals] = {}
    for (_, currency), buckets in sorted(balances.items()):
        sums = totals.setdefault(currency, _empty_totals())
        for bucket in MIGRATION_BUCKETS:
            sums[bucket] = add(sums[bucket], buckets.get(bucket, ZERO))
    return totals


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One (user, currency, bucket) whose ledger balance is not what the legacy rows add up to."""

    user_id: str
    currency: str
    bucket: MigrationBucket
    legacy: Decimal
    ledger: Decimal

    def __str__(self) -> str:
        return (
            f"{self.user_id} {self.currency} {self.bucket}: legacy {format_amount(self.legacy)},"
            f" ledger {format_amount(self.ledger)}"
        )


def mismatches(
    expected: Mapping[tuple[str, str], Mapping[MigrationBucket, Decimal]],
    actual: Mapping[tuple[str, str], Mapping[MigrationBucket, Decimal]],
) -> list[Mismatch]:
    """Every (user, currency, bucket) whose ledger balance is not what the legacy rows add up to:
    a wallet the legacy rows never held (a deposit in another currency before the migration)
    counts from a legacy 0, as it does in its currency's total."""
    found: list[Mismatch] = []
    for key in sorted(set(expected) | set(actual)):
        for bucket in MIGRATION_BUCKETS:
            want = expected.get(key, {}).get(bucket, ZERO)
            have = actual.get(key, {}).get(bucket, ZERO)
            if want != have:
                found.append(Mismatch(key[0], key[1], bucket, want, have))
    return found
