"""wallet.results go to the feature that owns their transaction_type, and only there."""

from __future__ import annotations

import pytest

from shared.messaging import CommandResult, CreditCommand, LockCommand, UnlockCommand
from trading.bootstrap import build_service
from trading.feature import of_types
from trading.messaging import ResultsDispatcher
from trading.settings import TradingSettings
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


def test_a_feature_names_the_results_it_asks_again_about() -> None:
    async def handler(result: CommandResult) -> None:
        return None

    dispatcher = ResultsDispatcher()
    dispatcher.register({"swap": handler}, owner="conversions", asked_again=of_types("swap"))
    dispatcher.register({"savings_interest": handler}, owner="savings")
    assert dispatcher.asked_again(_result("swap"))
    assert not dispatcher.asked_again(_result("savings_interest"))
    assert not dispatcher.asked_again(_result("deposit_nowpayments"))


def test_the_service_asks_again_about_what_its_features_resend() -> None:
    """Each of these is sent again by whoever sent it while its record waits (a pass, a day's
    run, the matcher's resend pass): a not-final answer read from the results is no answer. A
    deposit's credit is the gateway's, not trading's."""
    settings = TradingSettings(
        auth_jwt_secret="x" * 32,
        kafka_bootstrap_servers="127.0.0.1:1",
        mongodb_url="mongodb://127.0.0.1:1",
    )
    service = build_service(settings)  # built, never started: nothing connects
    asked_again = service.results._asked_again
    assert asked_again is not None
    asked = {t for t in ALL_TYPES if asked_again(_result(t))}
    assert asked == set(ALL_TYPES) - {"deposit_nowpayments"}
    # An order's lock is asked again by the relay; its unlocks and its trades' settlements by the
    # matcher's pass over the batches the wallet has not answered in full.
    lock = LockCommand(
        user_id="amy",
        currency="GBP",
        amount="1",
        transaction_type="spot_order",
        reference_id="o1:lock",
    )
    unlock = UnlockCommand(
        user_id="amy",
        currency="GBP",
        amount="1",
        transaction_type="spot_order",
        reference_id="o1:unlock:cancelled",
        hold_id="o1",
    )
    assert asked_again(result_of(lock, "rejected"))
    assert asked_again(result_of(unlock, "rejected"))


ALL_TYPES = (
    "swap",
    "express_buy",
    "liquidity_funding",
    "referral_commission",
    "savings_deposit",
    "savings_withdrawal",
    "savings_interest",
    "spot_order",
    "spot_trade",
    "deposit_nowpayments",
)
