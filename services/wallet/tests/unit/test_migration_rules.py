"""Pure migration rules: how each legacy value is read, rounded, refused and turned into lines."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from bson import ObjectId

from wallet.domain.migration import (
    CollectionMapping,
    InvalidRow,
    MappingError,
    Plan,
    exact_text,
    mismatches,
    opening_reference,
    parse_mapping,
    read_amount,
    read_document,
)

CRYPTO = CollectionMapping(
    "crypto_balances", "user_id", "coin", available_field="balance", locked_field="locked"
)
SAVINGS = CollectionMapping("savings_balances", "uid", "asset", savings_field="amount")


def doc(**fields: Any) -> dict[str, Any]:
    return {"_id": "d1", "user_id": "alice", "coin": "btc", **fields}


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (0.1, Decimal("0.1")),  # the float a person typed, not 0.1000000000000000055…
        (0.1 + 0.2, Decimal("0.30000000000000004")),  # float noise is read as it round-trips
        (1e-8, Decimal("1E-8")),
        ("0.00155", Decimal("0.00155")),
        (" 12 ", Decimal("12")),
        (3, Decimal(3)),
        (Decimal("1.234567890123456789"), Decimal("1.234567890123456789")),
    ],
)
def test_amounts_are_read_exactly(stored: object, expected: Decimal) -> None:
    assert read_amount(stored) == expected


@pytest.mark.parametrize(
    "stored",
    [
        *(True, False, float("nan"), float("inf"), "abc", "", "1e", [1], {"v": 1}, "NaN"),
        # Decimal() reads these; the system's amounts are ASCII decimal text only
        *("1_000.5", "\u0661\u0660\u0660", "\uff11.\uff15", "1e99999"),
    ],
)
def test_unreadable_amounts(stored: object) -> None:
    assert read_amount(stored) is None


def test_a_document_becomes_one_line_per_non_zero_bucket() -> None:
    read = read_document(CRYPTO, doc(balance=1.5, locked="0.25"))
    assert not read.invalid
    assert not read.rounded
    assert [(line.bucket, line.amount) for line in read.lines] == [
        ("available", Decimal("1.5")),
        ("locked", Decimal("0.25")),
    ]
    assert {line.reference_id for line in read.lines} == {"legacy:crypto_balances:d1"}
    assert [line.transaction_type for line in read.lines] == [
        "legacy_migration",
        "legacy_migration_locked",
    ]
    assert read.lines[0].currency == "BTC"  # case-insensitive codes


def test_missing_null_and_zero_amounts_make_no_line() -> None:
    assert read_document(CRYPTO, doc(balance=0, locked=None)).lines == ()
    assert read_document(CRYPTO, doc()).lines == ()
    assert read_document(CRYPTO, doc(balance=-0.0)).invalid == ()


def test_more_decimals_than_the_currency_holds_are_rounded_half_even_and_listed() -> None:
    read = read_document(CRYPTO, doc(balance=0.123456785, locked="0.000000015"))
    assert [line.amount for line in read.lines] == [Decimal("0.12345678"), Decimal("0.00000002")]
    [first, second] = read.rounded
    assert (first.field, first.original, first.migrated) == (
        "balance",
        "0.123456785",
        Decimal("0.12345678"),
    )
    assert first.difference == Decimal("-0.000000005")
    assert second.difference == Decimal("0.000000005")


def test_a_rounding_past_the_ledgers_digits_is_listed_with_its_exact_difference() -> None:
    # 61 significant digits, 64 characters: read, rounded and credited, then the difference died
    # with Inexact in the ledger's 60-digit context and no report was written.
    original = ".005" + "1" * 60
    read = read_document(CRYPTO, doc(coin="gbp", balance=original))
    assert [(line.currency, line.amount) for line in read.lines] == [("GBP", Decimal("0.01"))]
    [rounded] = read.rounded
    assert (rounded.original, rounded.migrated) == (original, Decimal("0.01"))
    assert rounded.difference == Decimal("0.004" + "8" * 59 + "9")
    assert rounded.difference + Decimal(original) == rounded.migrated
    assert exact_text(rounded.difference) == "0.004" + "8" * 59 + "9"
    # one that rounds to nothing: no line, the whole amount listed as taken away
    dust = "0." + "0" * 61 + "1"
    read = read_document(CRYPTO, doc(balance=dust))
    assert read.lines == ()
    assert exact_text(read.rounded[0].difference) == "-" + dust


def test_nowpayments_tickers_map_to_the_asset() -> None:
    mapping = CollectionMapping("c", "user_id", "coin", available_field="balance")
    [line] = read_document(mapping, doc(coin="usdttrc20", balance="5")).lines
    assert line.currency == "USDT"


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"coin": "DOGE", "balance": 1}, "coin", "unknown_currency"),
        ({"coin": None, "balance": 1}, "coin", "unknown_currency"),
        ({"user_id": None, "balance": 1}, "user_id", "missing_user_id"),
        ({"user_id": "", "balance": 1}, "user_id", "missing_user_id"),
        ({"balance": -1.5}, "balance", "negative_amount"),
        ({"balance": "12abc"}, "balance", "unreadable_amount"),
        ({"balance": True}, "balance", "unreadable_amount"),
        ({"balance": 1e30}, "balance", "amount_too_large"),
        # what no wallet command carries: a control character, an id too long once prefixed;
        # the dry run passed them and the real run died on its first such credit
        ({"user_id": "bob\x01", "balance": 1}, "user_id", "unusable_user_id"),
        ({"user_id": "é" * 201, "balance": 1}, "user_id", "unusable_user_id"),
        # present but not an id: told apart from a missing one, so that nobody skips a real user
        ({"user_id": 12345.5, "balance": 1}, "user_id", "unusable_user_id"),
        ({"user_id": 2.0**60, "balance": 1}, "user_id", "unusable_user_id"),
        ({"user_id": float("nan"), "balance": 1}, "user_id", "unusable_user_id"),
        ({"user_id": ["bob"], "balance": 1}, "user_id", "unusable_user_id"),
        ({"user_id": False, "balance": 1}, "user_id", "unusable_user_id"),
        ({"user_id": Decimal("1E+5000"), "balance": 1}, "user_id", "unusable_user_id"),
        ({"user_id": Decimal("1E+200"), "balance": 1}, "user_id", "unusable_user_id"),
        ({"user_id": Decimal("sNaN"), "balance": 1}, "user_id", "unusable_user_id"),
        ({"_id": "x" * 180, "balance": 1}, "_id", "unusable_document_id"),
    ],
)
def test_invalid_rows_are_listed_with_why_and_make_no_line(
    fields: dict[str, Any], field: str, reason: str
) -> None:
    read = read_document(CRYPTO, doc(**fields))
    assert read.lines == ()
    assert [(row.field, row.reason) for row in read.invalid] == [(field, reason)]
    assert read.invalid[0].collection == "crypto_balances"
    assert read.invalid[0].document_id == str(fields.get("_id", "d1"))


def test_one_invalid_bucket_keeps_the_whole_document_out() -> None:
    read = read_document(CRYPTO, doc(balance=1, locked=-2))
    assert read.lines == ()
    assert [row.reason for row in read.invalid] == ["negative_amount"]


def test_custom_and_dotted_field_names() -> None:
    mapping = CollectionMapping(
        "trader_balances", "owner.id", "ccy", available_field="bal.free", locked_field="bal.held"
    )
    document = {"_id": 7, "owner": {"id": 42}, "ccy": "Eth", "bal": {"free": "1", "held": 2}}
    read = read_document(mapping, document)
    assert [(line.user_id, line.currency, line.bucket, line.amount) for line in read.lines] == [
        ("42", "ETH", "available", Decimal(1)),
        ("42", "ETH", "locked", Decimal(2)),
    ]
    assert read.lines[0].reference_id == opening_reference("trader_balances", "7")


def test_plan_counts_valid_records_and_sums_per_user_and_currency() -> None:
    plan = Plan()
    plan.add("crypto_balances", read_document(CRYPTO, doc(balance=1)))
    plan.add("crypto_balances", read_document(CRYPTO, {**doc(balance=2), "_id": "d2"}))
    plan.add("crypto_balances", read_document(CRYPTO, {**doc(balance=-1), "_id": "d3"}))
    plan.add(
        "savings_balances",
        read_document(SAVINGS, {"_id": "s1", "uid": "bob", "asset": "USDT", "amount": "10"}),
    )
    assert plan.records == {"crypto_balances": 2, "savings_balances": 1}
    assert plan.users == {"alice", "bob"}
    assert plan.totals()["BTC"]["available"] == Decimal(3)
    assert plan.totals()["USDT"]["savings"] == Decimal(10)
    assert len(plan.invalid) == 1
    expected = plan.expected()
    assert mismatches(expected, expected) == []
    actual = {key: dict(value) for key, value in expected.items()}
    actual[("alice", "BTC")]["available"] = Decimal("2.99999999")
    assert [str(m) for m in mismatches(expected, actual)] == [
        "alice BTC available: legacy 3, ledger 2.99999999"
    ]
    # A wallet the legacy rows never held counts from 0; an empty one is no difference.
    actual[("alice", "ETH")] = {"available": Decimal("0.1"), "locked": Decimal(0)}
    actual[("bob", "BTC")] = {"available": Decimal(0), "savings": Decimal(0)}
    assert [str(m) for m in mismatches(expected, actual)] == [
        "alice BTC available: legacy 3, ledger 2.99999999",
        "alice ETH available: legacy 0, ledger 0.1",
    ]


HEX = "65f0000000000000000000a1"


@pytest.mark.parametrize(
    ("first", "second"),
    [(1, "1"), (ObjectId(HEX), HEX), (HEX, ObjectId(HEX)), (1.5, "1.5"), (Decimal("2.50"), "2.50")],
    ids=["int-string", "objectid-hex", "hex-objectid", "float-string", "decimal-string"],
)
def test_documents_whose_ids_read_the_same_are_never_credited_under_one_reference(
    first: object, second: object
) -> None:
    # Both made `legacy:crypto_balances:1`: the ledger answered the second's credit as a duplicate
    # of the first's (`already_applied`, nothing failed), and its balance never came in.
    plan = Plan()
    plan.add("crypto_balances", read_document(CRYPTO, {**doc(balance=1), "_id": first}))
    plan.add("crypto_balances", read_document(CRYPTO, {**doc(balance=2), "_id": second}))
    text = str(first)
    assert [(line.reference_id, line.amount) for line in plan.lines] == [
        (f"legacy:crypto_balances:{text}", Decimal(1))
    ]
    assert plan.invalid == [
        InvalidRow("crypto_balances", text, "alice", "BTC", "_id", text, "ambiguous_document_id")
    ]
    assert plan.records == {"crypto_balances": 1}
    assert plan.totals()["BTC"]["available"] == Decimal(1)


def test_an_invalid_document_keeps_its_reference_from_another_and_distinct_ids_pass() -> None:
    plan = Plan()
    plan.add("crypto_balances", read_document(CRYPTO, {**doc(balance=-1), "_id": 7}))
    plan.add("crypto_balances", read_document(CRYPTO, {**doc(balance=2), "_id": "7"}))
    assert plan.lines == []
    assert [(row.document_id, row.field, row.reason) for row in plan.invalid] == [
        ("7", "balance", "negative_amount"),
        ("7", "_id", "ambiguous_document_id"),
    ]
    # The same _id in another collection is another reference; references are as they were.
    plan = Plan()
    plan.add("crypto_balances", read_document(CRYPTO, {**doc(balance=1), "_id": 7}))
    plan.add("crypto_balances", read_document(CRYPTO, {**doc(balance=1), "_id": ObjectId(HEX)}))
    plan.add(
        "savings_balances",
        read_document(SAVINGS, {"_id": "7", "uid": "bob", "asset": "BTC", "amount": 1}),
    )
    assert plan.invalid == []
    assert [line.reference_id for line in plan.lines] == [
        "legacy:crypto_balances:7",
        f"legacy:crypto_balances:{HEX}",
        "legacy:savings_balances:7",
    ]


def test_the_mapping_file_is_checked() -> None:
    good = {
        "collection": [{"name": "c", "user_field": "u", "currency_field": "k", "locked_field": "l"}]
    }
    assert parse_mapping(good)[0].locked_field == "l"
    with pytest.raises(MappingError, match="no"):
        parse_mapping({})
    with pytest.raises(MappingError, match="at least one"):
        parse_mapping({"collection": [{"name": "c", "user_field": "u", "currency_field": "k"}]})
    with pytest.raises(MappingError, match="unknown keys"):
        parse_mapping({"collection": [{**good["collection"][0], "balance": "x"}]})
    with pytest.raises(MappingError, match="twice"):
        parse_mapping({"collection": good["collection"] * 2})
    # A misspelt table would leave its collection out; one field read into two buckets would
    # credit its amount twice.
    with pytest.raises(MappingError, match="unknown keys colection"):
        parse_mapping({**good, "colection": good["collection"]})
    with pytest.raises(MappingError, match="field l named twice"):
        parse_mapping({"collection": [{**good["collection"][0], "savings_field": "l"}]})
    with pytest.raises(MappingError, match="field u named twice"):
        parse_mapping({"collection": [{**good["collection"][0], "available_field": "u"}]})
    # The name is in every opening credit's reference, which no space may be in.
    with pytest.raises(MappingError, match="reference"):
        parse_mapping({"collection": [{**good["collection"][0], "name": "old wallets"}]})


@pytest.mark.parametrize(
    ("stored", "user_id"),
    [(12345, "12345"), (12345.0, "12345"), (Decimal("12345.00"), "12345"), ("u-7", "u-7")],
)
def test_a_user_id_is_the_same_whatever_number_type_spells_it(stored: object, user_id: str) -> None:
    [line] = read_document(CRYPTO, doc(user_id=stored, balance=1)).lines
    assert line.user_id == user_id
