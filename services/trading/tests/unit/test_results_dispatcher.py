"""wallet.results go to the feature that owns their transaction_type, and only there."""

from __future__ import annotations

import pytest

from shared.messaging import CommandResult, CreditCommand
from trading.messaging import ResultsDispatcher
from trading.testing import result_of


def _result(transaction_type: str) -> CommandResult:
    command = CreditCommand(
        user_id="amy",
        currency="BTC",
        amount="1",
        transaction_type=transaction_type,
        reference_id=f"{transaction_type}:1",
    )
    return result_of(command, "applied")


async def test_each_result_reaches_its_owner_and_others_are_ignored() -> None:
    seen: list[tuple[str, str]] = []

    async def swaps(result: CommandResult) -> None:
        seen.append(("swaps", result.transaction_type))

    async def savings(result: CommandResult) -> None:
        seen.append(("savings", result.transaction_type))

    dispatcher = ResultsDispatcher()
    dispatcher.register({"swap": swaps, "express_buy": swaps}, owner="conversions")
    dispatcher.register({"savings_interest": savings}, owner="savings")
    for transaction_type in ("swap", "deposit_nowpayments", "savings_interest", "express_buy"):
        result = _result(transaction_type)
        assert dispatcher.handles(result) is (transaction_type != "deposit_nowpayments")
        await dispatcher.dispatch(result)
    assert seen == [("swaps", "swap"), ("savings", "savings_interest"), ("swaps", "express_buy")]


def test_a_transaction_type_has_one_owner() -> None:
    async def handler(result: CommandResult) -> None:
        return None

    dispatcher = ResultsDispatcher()
    dispatcher.register({"swap": handler}, owner="conversions")
    with pytest.raises(ValueError, match="spot: transaction_type 'swap' already has a handler"):
        dispatcher.register({"swap": handler}, owner="spot")
