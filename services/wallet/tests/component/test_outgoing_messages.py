"""Results and events are built without validating again: they must still be exactly valid messages."""

from shared.messaging import (
    CommandResult,
    CreditCommand,
    DebitCommand,
    LedgerTransaction,
    TransferCommand,
    encode,
)
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.ledger_service import LedgerService


async def test_results_and_events_equal_their_validated_form() -> None:
    common = {"currency": "ETH", "user_id": "alice"}
    commands = [
        CreditCommand(
            **common,
            amount="1.000000000000000001",
            transaction_type="deposit_nowpayments",
            reference_id="p1",
            metadata={"order_id": "o-1", "n": 2},
        ),
        TransferCommand(
            **common,
            amount="0.25",
            transaction_type="p2p_payment",
            reference_id="t1",
            to_user="bob",
        ),
        DebitCommand(**common, amount="99", transaction_type="withdrawal", reference_id="w1"),
        CreditCommand(
            **common,
            amount="1.000000000000000001",
            transaction_type="deposit_nowpayments",
            reference_id="p1",
            metadata={"order_id": "o-1", "n": 2},
        ),
    ]
    report = await LedgerService(InMemoryLedgerStore()).handle_batch(commands)

    assert [r.status for _, r in report.results] == ["applied", "applied", "rejected", "duplicate"]
    for _, result in report.results:
        validated = CommandResult.model_validate_json(encode(result))
        assert validated == result
        assert encode(validated) == encode(result)
    assert [e.to_user for e in report.events] == [None, "bob"]
    for event in report.events:
        validated_event = LedgerTransaction.model_validate_json(encode(event))
        assert validated_event == event
        assert encode(validated_event) == encode(event)
        assert event.is_balanced()
    applied = report.results[0][1]
    assert applied.balances[0].available_balance == applied.balances[0].total_balance
    assert b'"available_balance":"1.000000000000000001"' in encode(applied)
