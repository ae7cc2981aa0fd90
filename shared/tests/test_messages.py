"""Every command type round-trips through JSON with amounts as strings; bad messages get a reason."""

import json
from decimal import Decimal
from typing import Any

import pytest

from shared.messaging import (
    COMMAND_TYPES,
    CommandResult,
    InvalidCommand,
    LedgerTransaction,
    Posting,
    canonical_fingerprint,
    encode,
    parse_command,
)

BASE: dict[str, Any] = {
    "command_id": "0f8e",
    "reference_id": "payment_12345",
    "transaction_type": "deposit_nowpayments",
    "user_id": "user123",
    "currency": "BTC",
    "amount": "0.01",
    "metadata": {"order_id": "o-1", "nested": {"n": 1}},
    "issued_at": "2026-11-26T05:00:00Z",
}
EXTRA_FIELDS: dict[str, dict[str, Any]] = {
    "release_locked": {"fee": "0.0001", "destination": "withdrawals"},
    "transfer": {"to_user": "user456"},
    "transfer_locked": {"to_user": "user456", "fee": "0.0001"},
    "exchange": {"fee": "0.0001", "receive_currency": "ETH", "receive_amount": "0.3"},
    "settle_trade": {
        "to_user": "user456",
        "hold_id": "order-b",
        "counter_hold_id": "order-s",
        "fee": "0.0001",
        "receive_currency": "ETH",
        "receive_amount": "0.3",
        "receive_fee": "0.0003",
    },
}


def command_json(command_type: str, **changes: Any) -> dict[str, Any]:
    return {**BASE, "type": command_type, **EXTRA_FIELDS.get(command_type, {}), **changes}


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
def test_every_command_type_round_trips_with_amounts_as_strings(command_type: str) -> None:
    sent = command_json(command_type)
    command = parse_command(json.dumps(sent).encode())
    assert command.type == command_type
    assert command.amount == Decimal("0.01")
    wire = json.loads(encode(command))
    for field in ("amount", "fee", "receive_amount"):
        if field in sent:
            assert wire[field] == sent[field]
            assert isinstance(wire[field], str)
    assert parse_command(encode(command)) == command


def test_the_idempotency_key_and_fingerprint_ignore_message_identity() -> None:
    first = parse_command(json.dumps(command_json("credit")))
    resent = parse_command(
        json.dumps(command_json("credit", command_id="other", amount="0.0100", metadata={}))
    )
    assert first.idempotency_key == ("credit", "deposit_nowpayments", "payment_12345")
    assert first.fingerprint() == resent.fingerprint()
    assert (
        first.fingerprint()
        != parse_command(json.dumps(command_json("credit", amount="0.02"))).fingerprint()
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"credit"', "not_an_object"),
        (b'{"amount": NaN}', "malformed_json"),
        (b'{"amount": Infinity}', "malformed_json"),
        (b" " * 70_000, "message_too_large"),
    ],
)
def test_undecodable_messages_have_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        parse_command(raw)
    assert refused.value.reason == reason


NUL_KEY = "metadata: metadata field names must not hold a NUL character"


@pytest.mark.parametrize(
    ("changes", "reason", "detail_code"),
    [
        ({"type": "mint"}, "unknown_type", None),
        # The contract: an unregistered transaction type is rejected unknown_transaction_type.
        ({"transaction_type": "Bonus"}, "unknown_transaction_type", None),
        ({"transaction_type": "DEPOSIT_NOWPAYMENTS"}, "unknown_transaction_type", None),
        ({"transaction_type": "x" * 65}, "unknown_transaction_type", None),
        ({"transaction_type": 7}, "invalid_field", None),
        ({"currency": "DOGE"}, "unknown_currency", None),
        ({"amount": "NaN"}, "invalid_amount", "amount_not_a_number"),
        ({"amount": "1E+9999"}, "invalid_amount", "amount_too_large"),
        ({"amount": "-0.01"}, "invalid_amount", "amount_not_positive"),
        ({"amount": "0"}, "invalid_amount", "amount_not_positive"),
        ({"amount": "0.000000001"}, "invalid_amount", "amount_too_precise"),
        ({"amount": 0.01}, "invalid_amount", "amount_not_a_string"),
        ({"amount": 1e400}, "invalid_field", None),
        ({"reference_id": ""}, "invalid_field", None),
        ({"user_id": None}, "invalid_field", None),
        ({"available_balance": "100"}, "unknown_field", None),
        ({"metadata": {"n": 2**64}}, "invalid_field", None),
        ({"metadata": {"blob": "x" * 9000}}, "invalid_field", None),
        # No BSON document holds a NUL in a field name: the store would refuse the whole batch.
        ({"metadata": {"a\u0000b": 1}}, "invalid_field", NUL_KEY),
        ({"metadata": {"trace": [{"\u0000": "x"}]}}, "invalid_field", NUL_KEY),
    ],
)
def test_invalid_commands_have_a_reason_and_keep_their_envelope(
    changes: dict[str, Any], reason: str, detail_code: str | None
) -> None:
    document = command_json("credit", **changes)
    raw = json.dumps(document).replace("Infinity", "1e400")
    with pytest.raises(InvalidCommand) as refused:
        parse_command(raw)
    assert refused.value.reason == reason
    if detail_code:
        assert refused.value.detail.startswith(detail_code)
    # Whatever identifies the sender's request is kept, so it can still be told the outcome.
    assert refused.value.envelope.get("reference_id") == (document["reference_id"] or None)
    assert refused.value.envelope.get("command_id") == "0f8e"


def test_missing_fields_are_named() -> None:
    document = command_json("transfer")
    del document["to_user"]
    with pytest.raises(InvalidCommand) as refused:
        parse_command(json.dumps(document))
    assert refused.value.reason == "missing_field"
    assert "to_user" in refused.value.detail


# A lone UTF-16 surrogate as JSON can carry one: escaped (either half alone, the halves in the
# wrong order), or encoded in the bytes as if it were a character. No UTF-8 can hold it.
LONE_SURROGATES = {
    "high": b"\\ud800",
    "low": b"\\udfff",
    "reversed": b"\\udc00\\ud83d",
    "raw": b"\xed\xa0\x80",
}
ENVELOPE = {
    "command_id": "0f8e",
    "type": "transfer",
    "transaction_type": "deposit_nowpayments",
    "reference_id": "payment_12345",
    "user_id": "user123",
}


@pytest.mark.parametrize("surrogate", LONE_SURROGATES.values(), ids=LONE_SURROGATES.keys())
@pytest.mark.parametrize(
    ("marked", "where"),
    [
        ({"user_id": "user@"}, "user_id:"),
        ({"reference_id": "payment@"}, "reference_id:"),
        ({"command_id": "0f8e@"}, "command_id:"),
        ({"transaction_type": "deposit@"}, "transaction_type:"),
        ({"type": "transfer@"}, "type:"),
        ({"to_user": "user@"}, "to_user:"),
        ({"metadata": {"order_id": "o-@"}}, "metadata.order_id:"),
        ({"metadata": {"trace": ["a", {"n": "@"}]}}, "metadata.trace.1.n:"),
        ({"metadata": {"key@": "v"}}, "metadata.key\\u"),
        ({"note@": "v"}, "note\\u"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field_and_never_echoed(
    marked: dict[str, Any], where: str, surrogate: bytes
) -> None:
    """Such text decodes to a str that can be neither stored nor published: the command is
    refused as it arrives, and its refusal carries back only what can be written."""
    raw = json.dumps(command_json("transfer", **marked)).encode().replace(b"@", surrogate)
    # As bytes off the wire, and as a str holding the decoded surrogate: every decoding path.
    for message in (raw, raw.decode("utf-8", "surrogatepass")):
        with pytest.raises(InvalidCommand) as refused:
            parse_command(message)
        assert refused.value.reason == "invalid_field"
        assert refused.value.detail.startswith(where)
        assert "lone UTF-16 surrogate" in refused.value.detail
        refused.value.detail.encode()
        # The refusal echoes every identifying field but the one that cannot be written.
        bad = next(iter(marked))
        assert refused.value.envelope == {k: v for k, v in ENVELOPE.items() if k != bad}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"fee": "0.01"}, "fee_not_below_amount"),
        ({"fee": "-0.001"}, "amount_not_positive"),
        ({"fee": "0.000000001"}, "amount_too_precise"),
    ],
)
def test_fees_are_checked_against_the_amount(changes: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        parse_command(json.dumps(command_json("transfer_locked", **changes)))
    assert refused.value.reason == "invalid_amount"
    assert refused.value.detail.startswith(code)


def test_an_exchange_needs_two_currencies() -> None:
    with pytest.raises(InvalidCommand) as refused:
        parse_command(json.dumps(command_json("exchange", receive_currency="btc")))
    assert refused.value.detail.startswith("same_currency")


def test_results_and_events_carry_amounts_as_strings() -> None:
    result = CommandResult.model_validate(
        {
            "command_id": "c",
            "type": "credit",
            "transaction_type": "deposit_nowpayments",
            "reference_id": "r",
            "user_id": "u",
            "status": "applied",
            "balances": [
                {
                    "user_id": "u",
                    "currency": "BTC",
                    "available_balance": "1.51",
                    "locked_balance": "0.5",
                    "savings_balance": "0",
                    "total_balance": "2.01",
                }
            ],
        }
    )
    wire = json.loads(encode(result))
    assert wire["balances"][0]["total_balance"] == "2.01"
    assert CommandResult.model_validate_json(encode(result)) == result
    event = LedgerTransaction(
        transaction_id="t",
        command_id="c",
        type="credit",
        transaction_type="deposit_nowpayments",
        reference_id="r",
        user_id="u",
        postings=[
            Posting(account="external:nowpayments", currency="BTC", amount=Decimal("-0.01")),
            Posting(account="user:u:available", currency="BTC", amount=Decimal("0.01")),
        ],
    )
    assert event.is_balanced()
    assert json.loads(encode(event))["postings"][0]["amount"] == "-0.01"


def test_is_balanced_sums_18_decimal_amounts_without_rounding() -> None:
    # 28 significant digits (Python's default) would round the sum of these to zero.
    big, big_and_a_wei = (
        Decimal("123456789012345678"),
        Decimal("123456789012345678.000000000000000001"),
    )
    event = LedgerTransaction(
        transaction_id="t2",
        command_id="c2",
        type="credit",
        transaction_type="deposit_nowpayments",
        reference_id="r2",
        user_id="u",
        postings=[
            Posting(account="user:u:available", currency="ETH", amount=big_and_a_wei),
            Posting(account="external:nowpayments", currency="ETH", amount=-big),
        ],
    )
    assert not event.is_balanced()


def test_the_fingerprint_compares_money_fields_with_defaults_filled_in() -> None:
    without_fee = command_json("release_locked", amount="0.5")
    del without_fee["fee"], without_fee["destination"]
    with_defaults = {**without_fee, "fee": "0", "hold_id": without_fee["reference_id"]}
    written_apart = {**with_defaults, "amount": "0.50000", "destination": "withdrawals"}
    fingerprints = {
        parse_command(json.dumps(spec)).fingerprint()
        for spec in (without_fee, with_defaults, written_apart)
    }
    assert len(fingerprints) == 1
    other_hold = parse_command(json.dumps({**without_fee, "hold_id": "order-1"}))
    assert other_hold.fingerprint() not in fingerprints
    # A fingerprint stored by an earlier version (every field, defaults as null) canonicalises
    # to the same form.
    legacy = json.loads(parse_command(json.dumps(without_fee)).model_dump_json())
    for name in ("command_id", "issued_at", "metadata"):
        legacy.pop(name)
    assert canonical_fingerprint(json.dumps(legacy)) in fingerprints
